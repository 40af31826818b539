"""Click intake under load: the real tracking app against a bare Starlette redirect.

A throwaway sample project (SQLite unless ``--database-url``) gets a few hundred
recipients and one real campaign run through the ``memory`` backend, so the click links
(``/c/<token>``) are the ones a run really sends. Then two servers run in turn, each
under uvicorn in its own process on a listening socket this script binds: the tracking
app (``python -m engine.web``) and a bare Starlette app that answers every GET with a
302. The same native load generator (``wrk``, Debian's package: a Python client would share
the two cores with the server and flatter the ratio) holds ``--connections`` keep-alive
connections for ``--seconds`` against each, with a browser User-Agent and no redirect
following. After the load the tracking server is stopped with SIGTERM, so its intake
stores what it holds, and the click events in the database are counted.

``sent`` is the clicks answered with a redirect (answers wrk read), ``recorded`` the click
events stored plus the repeats the server counted without storing (one stored click per
link per ``[web] dedupe_window_seconds``; ``GET /health`` reports the repeats). Every
answered click must be recorded; ``in_flight`` (``recorded - sent``) are the requests
wrk left unread when it stopped, at most one per connection. ``ratio_to_bare`` compares
the two servers measured in the same run.

The load is one client (127.0.0.1) at thousands of clicks a second, far over the default
per-client limits (``[web] rate_limit_per_second``, ``max_connections_per_client``), which
would answer its clicks without recording them. The sample project's ``[web]`` table
raises them (``BENCH_LIMITS``), so the bench measures the intake, not the rate limit.

    python bench/clicks.py --json clicks.json
    python bench/clicks.py --seconds 2 --connections 8      # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from campaign import CAMPAIGN, make_project, seed  # noqa: E402

BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"
# One client under its limits: see the module docstring.
BENCH_LIMITS = """[web]
rate_limit_per_second = 1e9
rate_limit_burst = 1000000000
max_connections_per_client = 4096
"""
CLICK_PATH = re.compile(r'href="https?://[^/"]+(/c/[A-Za-z0-9_-]+)"')


# -- the project and its links ---------------------------------------------------------------
def sent_click_paths(root: Path, database_url: str, recipients: int) -> list[str]:
    """Seed the sample project, run its campaign once, return every click path it sent."""
    from engine.app import Engine
    from engine.sending.real_run import run_campaign

    make_project(root, database_url, "memory")
    config = root / "config" / "tailormail.toml"
    config.write_text(config.read_text().replace("[web]\n", BENCH_LIMITS, 1))
    seed(root, recipients)
    with Engine(project_dir=root, load_entry_points=False) as engine:
        summary = run_campaign(engine, CAMPAIGN, run_id="bench-clicks")
        messages = getattr(engine, "memory_outbox", None) or []
    paths = [path for message in messages for path in CLICK_PATH.findall(message.html or "")]
    if not paths:
        raise SystemExit(f"the run sent no click links ({summary})")
    return paths


def count_clicks(root: Path) -> int:
    """Click events stored in the project's database."""
    from sqlalchemy import func, select

    from engine.app import Engine
    from engine.models import EventRow

    with Engine(project_dir=root, load_entry_points=False) as engine, engine.db.connect() as conn:
        table = EventRow.__table__  # type: ignore[attr-defined]
        query = select(func.count()).select_from(table).where(table.c.type == "click")
        return int(conn.execute(query).scalar_one())


def counted_repeats(port: int) -> int:
    """The repeated clicks the tracking server counted without storing (``/health``)."""
    import httpx

    health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30, trust_env=False).json()
    return int(health["intake"]["repeats"].get("click", 0))


# -- the servers, each in its own process -----------------------------------------------------
def bare_app() -> Any:
    """A Starlette app answering every GET with a 302, as cheaply as Starlette allows."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def redirect(_: Request) -> Response:
        return Response(status_code=302, headers={"Location": "https://shop.example.com/"})

    return Starlette(routes=[Route("/{path:path}", redirect, methods=["GET", "HEAD"])])


def serve_bare(fd: int) -> None:
    """Serve ``bare_app`` on the inherited listening socket ``fd`` until interrupted."""
    import uvicorn

    config = uvicorn.Config(bare_app(), log_level="warning", lifespan="on")
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


@contextlib.contextmanager
def server(command: list[str], sock: socket.socket) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (which serves on ``sock``'s fd) until the block ends, then SIGTERM it.

    Leaving waits for a graceful exit: uvicorn finishes its lifespan, so the tracking
    intake stores every event it acknowledged.
    """
    port = sock.getsockname()[1]
    child = subprocess.Popen(command, pass_fds=[sock.fileno()])
    try:
        deadline = time.monotonic() + 30
        while True:
            # The socket listens already, so only an HTTP answer says the child serves.
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), 2) as probe,
            ):
                probe.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                if probe.recv(64).startswith(b"HTTP/1.1"):
                    break
            if child.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{command[1:3]} did not start serving")
            time.sleep(0.1)
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            raise SystemExit(f"{command[1:3]} did not stop within 60 s") from None


# -- the load generator: wrk, a native one ----------------------------------------------------
WRK_SCRIPT = """
local paths = {%(paths)s}
local threads, next_id = {}, 0
wrk.headers["User-Agent"] = %(agent)s
wrk.headers["Accept"] = "text/html"

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  i, redirects, fivexx, other = id, 0, 0, 0
end

function request()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end

function response(status, headers, body)
  if status == 302 then redirects = redirects + 1
  elseif status >= 500 then fivexx = fivexx + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local r, f, o = 0, 0, 0
  for _, t in ipairs(threads) do
    r = r + t:get("redirects"); f = f + t:get("fivexx"); o = o + t:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    '{"redirects": %%d, "5xx": %%d, "other": %%d, "broken": %%d, "seconds": %%f, ' ..
    '"p50_ms": %%f, "p99_ms": %%f}\\n',
    r, f, o, e.connect + e.read + e.write + e.timeout, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""
"""wrk's script: every connection cycles through the links a run sent (each thread from
its own offset), with a browser's User-Agent; it counts the answers by status and prints
them, with the latency percentiles, as one JSON line."""


def lua_string(text: str) -> str:
    """``text`` as a Lua string literal (the links and the User-Agent are plain ASCII)."""
    return json.dumps(text)


def load(port: int, paths: list[str], seconds: float, connections: int) -> dict[str, Any]:
    """Load the server on ``port`` with wrk for ``seconds`` over ``connections`` keep-alive
    connections (two threads: the machine's two cores are shared with the server)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("bench/clicks.py needs wrk, a native load generator: apt-get install wrk")
    script = WRK_SCRIPT % {
        "paths": ", ".join(lua_string(path) for path in paths),
        "agent": lua_string(BROWSER_UA),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        threads = str(min(2, connections))
        command = [wrk, "-t", threads, "-c", str(connections), "-d", f"{seconds:g}s"]
        command += ["--timeout", "10s", "-s", handle.name, f"http://127.0.0.1:{port}"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"wrk failed:\n{done.stderr or done.stdout}")
        line = done.stdout.strip().splitlines()[-1]
        figures: dict[str, Any] = json.loads(line)
    finally:
        os.unlink(handle.name)
    return figures | {"per_s": figures["redirects"] / figures["seconds"]}


# -- the run ---------------------------------------------------------------------------------
def listening_socket() -> socket.socket:
    """A listening socket on a free loopback port, inheritable by a child process."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=2048)
    sock.set_inheritable(True)
    return sock


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Both servers under the same load; the figures issue 6 names, plus the raw ones."""
    root = workdir / "project"
    database_url = args.database_url or f"sqlite:///{workdir}/tailormail.db"
    paths = sent_click_paths(root, database_url, args.recipients)
    with listening_socket() as sock:
        command = [sys.executable, __file__, "--serve-bare", str(sock.fileno())]
        with server(command, sock):
            bare = load(sock.getsockname()[1], paths, args.seconds, args.connections)
    before = count_clicks(root)
    with listening_socket() as sock:
        command = [sys.executable, "-m", "engine.web", "-p", str(root), "--fd", str(sock.fileno())]
        with server(command, sock):
            clicks = load(sock.getsockname()[1], paths, args.seconds, args.connections)
            repeats = counted_repeats(sock.getsockname()[1])
    recorded = count_clicks(root) - before + repeats
    return {
        "clicks_per_s": clicks["per_s"],
        "bare_per_s": bare["per_s"],
        "ratio_to_bare": clicks["per_s"] / bare["per_s"] if bare["per_s"] else 0.0,
        "p50_ms": clicks["p50_ms"],
        "p99_ms": clicks["p99_ms"],
        "sent": clicks["redirects"],
        "recorded": recorded,
        "in_flight": recorded - clicks["redirects"],
        "repeats": repeats,
        "errors_5xx": clicks["5xx"],
        "bare": bare,
        "clicks": clicks,
        "links": len(paths),
        "connections": args.connections,
        "seconds": args.seconds,
    }


def print_table(figures: dict[str, Any]) -> None:
    """The two servers side by side."""
    table = Table(
        title=f"click intake, {figures['connections']} connections, {figures['seconds']:g} s each "
        f"({figures['links']} links from a real run)"
    )
    for column in ("server", "redirects/s", "p50 ms", "p99 ms", "302", "5xx", "other", "broken"):
        table.add_column(column, justify="left" if column == "server" else "right")
    for name, row in (("bare", figures["bare"]), ("tracking app", figures["clicks"])):
        table.add_row(
            name,
            f"{row['per_s']:,.0f}",
            f"{row['p50_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
            str(row["redirects"]),
            str(row["5xx"]),
            str(row["other"]),
            str(row["broken"]),
        )
    console = Console()
    console.print(table)
    console.print(
        f"ratio_to_bare {figures['ratio_to_bare']:.2f}  sent {figures['sent']}  "
        f"recorded {figures['recorded']}  in_flight {figures['in_flight']}  "
        f"errors_5xx {figures['errors_5xx']}"
    )


def main() -> None:
    """Parse the command line: measure (default), or one of the child roles."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="load per server")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections")
    parser.add_argument("--recipients", type=int, default=300, help="audience of the run")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--serve-bare", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare is not None:
        serve_bare(args.serve_bare)
        return
    if args.seconds <= 0 or args.connections < 1 or args.recipients < 1:
        parser.error("--seconds, --connections and --recipients must be positive")
    with tempfile.TemporaryDirectory(prefix="tm-bench-clicks-") as workdir:
        figures = measure(args, Path(workdir))
    print_table(figures)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
