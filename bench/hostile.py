"""The tracking server under hostile clients: what real requests wait while it is attacked.

A throwaway project with one sent email (a ledger row, so its click link is real) is
served by ``tailormail serve --no-scheduler`` on a loopback port, with its default
``[web]`` limits and a limit of ``--files`` open files (2,048 by default: fewer than
the attack's connections, so only the server's caps keep it up).
Probes from 127.0.0.1 (``GET /health`` and ``GET /c/<token>``, each on a fresh
connection, every 0.25 s) are timed first alone, then while ``Attack`` holds ``--idle``
connections that send nothing and ``--slow`` connections that send a header line every
2 s and never finish their head, from 127.0.0.2-127.0.0.9; each attacking connection
reconnects 1 s after the server closes it. Printed: probe latency alone and under
attack, probe failures, connections the attackers made and lost, the server's RSS growth
(``VmRSS``) and how many lines it logged.

    python bench/hostile.py --json hostile.json
    python bench/hostile.py --seconds 5 --idle 500 --slow 50      # a smoke run

``tests/test_hostile_clients.py`` runs the same ``Attack`` and ``ServeProcess`` and asserts
what must hold (no probe refused or failed, the log and the memory bounded); the
latencies are figures, printed here and never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
ATTACKERS = tuple(f"127.0.0.{n}" for n in range(2, 10))
SECRET = "hostile-bench-secret-0123456789-0123456789"
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"
PROBE_EVERY = 0.25  # seconds between probes
PROBE_TIMEOUT = 30.0  # generous: a probe fails on a hang, never on slowness


# -- the project and its server ------------------------------------------------------------
def make_project(root: Path) -> str:
    """A project with one sent ledger row; returns the path of a real click link."""
    sys.path.insert(0, str(ROOT))
    from engine.app import Engine
    from engine.db import session_scope
    from engine.models import LedgerRow, LedgerStatus, utcnow
    from engine.settings import load_settings

    (root / "config").mkdir(parents=True, exist_ok=True)
    (root / "config" / "tailormail.toml").write_text('database_url = "sqlite:///t.db"\n')
    settings = load_settings(project_dir=root, environ={"TAILORMAIL_SECRET": SECRET})
    with Engine(settings=settings, load_entry_points=False) as engine:
        with session_scope(engine.db) as session:
            row = LedgerRow(
                run_id="hostile",
                campaign="alerts",
                recipient_id=uuid.uuid4().hex,
                email="ann@example.com",
                decision_id=uuid.uuid4().hex,
                status=LedgerStatus.SENT,
                variant="a",
                probability=1.0,
                links=[],
                sent_at=utcnow(),
            )
            session.add(row)
            session.flush()
            assert row.id is not None
            send_id = row.id
        return f"/c/{engine.tokens.click(send_id, 0, 'https://shop.example/a')}"


def free_port() -> int:
    """A loopback port nobody listens on (the server binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_own_descriptor_limit(wanted: int) -> int:
    """Raise this process's soft limit on open files towards ``wanted``; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class ServeProcess:
    """``tailormail serve --no-scheduler`` for ``project`` on ``port``, logging to ``log``;
    with ``files``, the server may open only that many (soft and hard limit)."""

    def __init__(self, project: Path, port: int, log: Path, files: int | None = None) -> None:
        """Prepare (not start) the server."""
        self.project = project
        self.port = port
        self.log = log
        self.files = files
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServeProcess:
        command = [sys.executable, "-m", "engine", "serve", "--no-scheduler"]
        command += ["--port", str(self.port), "--project", str(self.project)]
        env = os.environ | {"TAILORMAIL_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
        files = self.files

        def limit_files() -> None:
            if files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=limit_files
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2, trust_env=False).is_success:
                    return self
            time.sleep(0.1)
        raise RuntimeError("serve did not answer /health within 60 s")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def rss_kib(self) -> int:
        """The server process's resident memory (``VmRSS``, KiB)."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def log_lines(self) -> list[str]:
        """What the server wrote so far, line by line."""
        return self.log.read_text(errors="replace").splitlines()


# -- the attack ----------------------------------------------------------------------------
class Attack:
    """``idle`` connections sending nothing and ``slow`` ones sending a header line every
    ``line_every`` seconds, spread over ``sources``, each reconnecting ``backoff`` seconds
    after the server closed it; on a thread of its own (an asyncio loop) while in use."""

    def __init__(
        self,
        port: int,
        idle: int,
        slow: int,
        *,
        sources: tuple[str, ...] = ATTACKERS,
        backoff: float = 1.0,
        line_every: float = 2.0,
    ) -> None:
        """Prepare the attack on 127.0.0.1:``port``."""
        self.port = port
        self.idle = idle
        self.slow = slow
        self.sources = sources
        self.backoff = backoff
        self.line_every = line_every
        self.stats = {"connected": 0, "closed_by_server": 0, "connect_failed": 0}
        self.holding = 0  # connections open right now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Attack:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    async def _main(self) -> None:
        tasks = [
            asyncio.create_task(self._connection(i, slow=i >= self.idle))
            for i in range(self.idle + self.slow)
        ]
        while not self._stop.is_set():
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _connection(self, index: int, *, slow: bool) -> None:
        source = self.sources[index % len(self.sources)]
        await asyncio.sleep(index * 0.001)  # a ramp of about 2 s for 2,000, not one burst
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.port, local_addr=(source, 0)
                )
            except OSError:
                self.stats["connect_failed"] += 1
                await asyncio.sleep(self.backoff)
                continue
            self.stats["connected"] += 1
            self.holding += 1
            try:
                await (self._trickle(reader, writer) if slow else self._hold(reader))
                self.stats["closed_by_server"] += 1
            except OSError:
                self.stats["closed_by_server"] += 1
            finally:
                self.holding -= 1
                writer.close()
            await asyncio.sleep(self.backoff)

    async def _hold(self, reader: asyncio.StreamReader) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                if not await asyncio.wait_for(reader.read(4096), 0.5):
                    return  # the server closed it

    async def _trickle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /health HTTP/1.1\r\nHost: tracking.example\r\n")
        while not self._stop.is_set():
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                if not await asyncio.wait_for(reader.read(4096), self.line_every):
                    return
            writer.write(b"X-Slow: 1\r\n")


# -- the probes ----------------------------------------------------------------------------
def probe(base: str, path: str) -> tuple[int, float]:
    """One request on a fresh connection from 127.0.0.1: (status or 0 on failure, seconds)."""
    start = time.perf_counter()
    try:
        with httpx.Client(trust_env=False, timeout=PROBE_TIMEOUT) as http:
            response = http.get(base + path, headers={"user-agent": BROWSER_UA})
        return response.status_code, time.perf_counter() - start
    except httpx.HTTPError:
        return 0, time.perf_counter() - start


def probe_for(base: str, click: str, seconds: float) -> list[tuple[str, int, float]]:
    """Alternate ``/health`` and the click every ``PROBE_EVERY`` for ``seconds``."""
    results = []
    until = time.monotonic() + seconds
    paths = ("/health", click)
    while time.monotonic() < until:
        path = paths[len(results) % 2]
        status, took = probe(base, path)
        results.append(("health" if path == "/health" else "click", status, took))
        time.sleep(PROBE_EVERY)
    return results


def failures(results: list[tuple[str, int, float]]) -> list[tuple[str, int, float]]:
    """Probes that did not get their answer (200 for health, 302 for the click)."""
    expected = {"health": 200, "click": 302}
    return [r for r in results if r[1] != expected[r[0]]]


def latency(results: list[tuple[str, int, float]]) -> dict[str, float]:
    """p50, p99 and max of the probes' times, in milliseconds."""
    times = sorted(r[2] * 1000 for r in results) or [0.0]
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]  # noqa: E731
    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": times[-1]}


# -- the run -------------------------------------------------------------------------------
def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Probes alone, then under attack; the figures of both and of the server."""
    limit = raise_own_descriptor_limit(args.idle + args.slow + 512)
    if limit < args.idle + args.slow + 256:
        raise SystemExit(f"this process may open only {limit} files: lower --idle/--slow")
    click = make_project(workdir / "project")
    log = workdir / "serve.log"
    with ServeProcess(workdir / "project", free_port(), log, args.files) as server:
        alone = probe_for(server.url, click, min(args.seconds, 5.0))
        rss_before = server.rss_kib()
        rss_peak = rss_before
        with Attack(server.port, args.idle, args.slow) as attack:
            time.sleep(2.5)  # the ramp
            holding = attack.holding
            attacked: list[tuple[str, int, float]] = []
            until = time.monotonic() + args.seconds
            while time.monotonic() < until:
                attacked += probe_for(server.url, click, 1.0)
                rss_peak = max(rss_peak, server.rss_kib())
            stats = dict(attack.stats)
        lines = server.log_lines()
    return {
        "alone": latency(alone),
        "attacked": latency(attacked),
        "probes": len(attacked),
        "probe_failures": len(failures(alone) + failures(attacked)),
        "attack_connections": args.idle + args.slow,
        "held_after_ramp": holding,
        "attack": stats,
        "rss_growth_mb": (rss_peak - rss_before) / 1024,
        "log_lines": len(lines),
        "server_files": args.files,
        "seconds": args.seconds,
    }


def print_table(figures: dict[str, Any]) -> None:
    """Probe latency alone and under attack, then the server's figures."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"probes from 127.0.0.1 while {figures['attack_connections']} connections attack "
        f"({figures['seconds']:g} s)"
    )
    for column in ("probes", "p50 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="right" if column != "probes" else "left")
    for name in ("alone", "attacked"):
        row = figures[name]
        table.add_row(name, f"{row['p50_ms']:.1f}", f"{row['p99_ms']:.1f}", f"{row['max_ms']:.1f}")
    console = Console()
    console.print(table)
    console.print(
        f"probe failures {figures['probe_failures']} of {figures['probes']}  "
        f"attack {figures['attack']}  held after the ramp {figures['held_after_ramp']}  "
        f"server RSS growth {figures['rss_growth_mb']:.1f} MB  log lines {figures['log_lines']}"
    )


def main() -> None:
    """Parse the command line and run the bench."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="probing under attack")
    parser.add_argument("--idle", type=int, default=2000, help="connections sending nothing")
    parser.add_argument("--slow", type=int, default=200, help="connections with slow heads")
    parser.add_argument("--files", type=int, default=2048, help="the server's descriptor limit")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    if args.seconds <= 0 or args.idle < 0 or args.slow < 0:
        parser.error("--seconds must be positive, --idle and --slow not negative")
    with tempfile.TemporaryDirectory(prefix="tm-bench-hostile-") as workdir:
        figures = measure(args, Path(workdir))
    print_table(figures)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
