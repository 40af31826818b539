"""The tracking server when things go wrong: SIGKILL under click load, an unreachable
database, several server processes on one project; and tokens kept out of its logs.

The server runs as production runs it (``python -m engine.web`` under uvicorn, on a
listening socket it inherits), or in-process on a thread where the test needs to reach in.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from kit.project import Project
from sqlmodel import Session, select

from engine.app import Engine
from engine.feedback.intake import spool_dir
from engine.models import EventRow, LedgerRow, LedgerStatus, SuppressionRow
from engine.sending.real_run import run_campaign
from engine.web import BackgroundServer

HUMAN_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"
SECRET = "test-secret-0123456789-0123456789-01"
DEADLINE = 120.0  # seconds; generous: these only fail on a hang
_CLICK_PATH = re.compile(r'href="https?://[^/"]+(/c/[A-Za-z0-9_-]+)"')


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``condition``; fail naming ``what`` if it is still false at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


class TrackingProcess:
    """``python -m engine.web`` for a project, serving on a socket the test keeps open.

    The test holds the listening socket, so a killed server's successor accepts the
    connections that queued meanwhile, as under systemd socket activation.
    """

    def __init__(self, project: Project, sock: socket.socket, log_level: str = "warning"):
        self.project = project
        self.sock = sock
        self.log_level = log_level
        self.child: subprocess.Popen[str] | None = None
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    def start(self) -> TrackingProcess:
        fd = self.sock.fileno()
        env = os.environ | {
            "TAILORMAIL_SECRET": SECRET,
            "TAILORMAIL_DATABASE_URL": self.project.db_url,
            # The test is one client (127.0.0.1) clicking for 150 readers: over the default
            # per-client rate its clicks would redirect unrecorded (docs/security.md).
            "TAILORMAIL_WEB__RATE_LIMIT_PER_SECOND": "1e9",
            "TAILORMAIL_WEB__RATE_LIMIT_BURST": "1000000000",
        }
        self.child = subprocess.Popen(
            [sys.executable, "-m", "engine.web", "-p", str(self.project.root), "--fd", str(fd)]
            + ["--log-level", self.log_level],
            pass_fds=[fd],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

        def healthy() -> bool:
            assert self.child is not None
            if self.child.poll() is not None:
                pytest.fail(f"the tracking server exited: {self.child.communicate()[0]}")
            try:
                return httpx.get(f"{self.url}/health", timeout=5, trust_env=False).is_success
            except httpx.HTTPError:
                return False

        wait_for(healthy, "the tracking server to answer /health")
        return self

    def kill(self) -> None:
        assert self.child is not None
        self.child.send_signal(signal.SIGKILL)
        self.child.communicate(timeout=DEADLINE)

    def stop(self) -> str:
        """SIGTERM (a clean shutdown) and the server's output."""
        assert self.child is not None
        self.child.send_signal(signal.SIGTERM)
        output, _ = self.child.communicate(timeout=DEADLINE)
        return output


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0), backlog=1024) as sock:
        yield sock


def sent_campaign(project: Project, base_url: str, people: int) -> Engine:
    """Send the campaign with the memory backend; links point at ``base_url``."""
    engine = project.engine(tracking_base_url=base_url)
    project.seed(engine, people=people)
    run_campaign(engine, "alerts", run_id="r1")
    return engine


def click_paths(engine: Engine) -> list[str]:
    outbox = getattr(engine, "memory_outbox")  # noqa: B009
    return [path for message in outbox for path in _CLICK_PATH.findall(message.html)]


def stored_clicks(engine: Engine) -> list[tuple[int, int]]:
    with Session(engine.db) as session:
        rows = session.exec(select(EventRow).where(EventRow.type == "click")).all()
    return [(row.send_id or 0, int(row.data["link_index"])) for row in rows]


def clicked(engine: Engine, path: str) -> tuple[int, int]:
    data = engine.tokens.verify(path.rsplit("/", 1)[1], "click")
    assert data is not None and data.link_index is not None
    return data.send_id, data.link_index


# -- item 4: SIGKILL under load -----------------------------------------------------------
def test_every_click_that_got_its_redirect_survives_sigkill_of_the_server(
    project: Project, listener: socket.socket
) -> None:
    server = TrackingProcess(project, listener)
    engine = sent_campaign(project, server.url, people=150)
    paths = click_paths(engine)
    random.Random(4).shuffle(paths)
    assert len(set(paths)) == len(paths) >= 500  # each link clicked once
    acknowledged: list[str] = []
    lock = threading.Lock()

    def reader(share: list[str]) -> None:
        with httpx.Client(
            base_url=server.url,
            headers={"user-agent": HUMAN_UA},
            timeout=DEADLINE,
            trust_env=False,
        ) as http:
            for path in share:
                try:
                    answer = http.get(path)
                except httpx.TransportError:
                    continue  # the server died with this request: not acknowledged
                if answer.status_code == 302:
                    with lock:
                        acknowledged.append(path)

    server.start()
    readers = [threading.Thread(target=reader, args=(paths[i::8],)) for i in range(8)]
    for thread in readers:
        thread.start()
    kills = 0
    for threshold in (60, 220, 380):  # three SIGKILLs, each in the middle of the load
        wait_for(lambda t=threshold: len(acknowledged) >= t, f"{threshold} acknowledged clicks")
        server.kill()
        kills += 1
        server.start()  # the successor adopts the dead server's log
    for thread in readers:
        thread.join(DEADLINE)
    assert kills == 3 and len(acknowledged) >= 380

    wanted = {clicked(engine, path) for path in acknowledged}
    wait_for(lambda: wanted <= set(stored_clicks(engine)), "every acknowledged click in the db")
    server.stop()
    stored = stored_clicks(engine)
    assert wanted <= set(stored)  # nothing that was acknowledged is lost
    assert len(stored) == len(set(stored))  # and nothing is stored twice
    assert list(spool_dir(engine).glob("*.log")) == []


# -- item 5: the database unreachable ---------------------------------------------------
class TcpProxy:
    """A loopback TCP proxy the test owns: closing it makes the database refuse us."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def open(self) -> TcpProxy:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()
        return self

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._listener is not None:
            # shutdown first: on Linux a bare close leaves a blocked accept() accepting.
            self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()


class Outage:
    """Makes the server's database unreachable: PostgreSQL refuses (through a proxy we
    close); SQLite is locked by another connection holding an exclusive transaction."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.sqlite: sqlite3.Connection | None = None
        self.proxy: TcpProxy | None = None
        self.server_url = project.db_url
        if project.db_url.startswith("postgresql"):
            parts = urlsplit(project.db_url)
            self.proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432)).open()
            self.server_url = project.db_url.replace(f":{parts.port}/", f":{self.proxy.port}/")

    def begin(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        else:
            self.sqlite = sqlite3.connect(self.project.db_url.removeprefix("sqlite:///"))
            self.sqlite.execute("BEGIN EXCLUSIVE")

    def end(self) -> None:
        if self.proxy is not None:
            self.proxy.open()
        elif self.sqlite is not None:
            self.sqlite.rollback()
            self.sqlite.close()


def test_with_the_database_down_links_redirect_and_unsubscribes_are_kept(
    project: Project,
) -> None:
    outage = Outage(project)
    with BackgroundServer(project.engine(database_url=outage.server_url)) as server:
        engine = sent_campaign(project, server.url, people=3)
        ann = next(m for m in engine.memory_outbox if m.to_address.startswith("user0@"))
        click = _CLICK_PATH.findall(ann.html)[0]
        unsubscribe = urlsplit(ann.headers["List-Unsubscribe"].strip("<>")).path
        target = ann.metadata["links"][clicked(engine, click)[1]]
        http = httpx.Client(base_url=server.url, headers={"user-agent": HUMAN_UA}, timeout=30)

        outage.begin()
        try:
            answer = http.get(click)
            assert (answer.status_code, answer.headers["location"]) == (302, target)
            one_click = http.post(unsubscribe, content=b"List-Unsubscribe=One-Click")
            assert one_click.status_code == 200
            assert "unsubscribed from all our emails" in one_click.text
            assert server.intake.pending == 2  # accepted into the log, waiting
            with Session(engine.db) as session:
                assert session.exec(select(SuppressionRow)).all() == []
        finally:
            outage.end()
        server.drain(DEADLINE)  # applied once the database answers again
        with Session(engine.db) as session:
            [suppressed] = session.exec(select(SuppressionRow)).all()
        assert (suppressed.email, suppressed.reason) == (ann.to_address, "unsubscribe")
        assert stored_clicks(engine) == [clicked(engine, click)]

    second = run_campaign(engine, "alerts", run_id="r2")
    assert (second.sent, second.skipped) == (2, 1)
    with Session(engine.db) as session:
        row = session.exec(
            select(LedgerRow).where(LedgerRow.run_id == "r2", LedgerRow.email == ann.to_address)
        ).one()
    assert (row.status, row.skip_reason) == (LedgerStatus.SKIPPED, "suppressed (unsubscribe)")


# -- several processes on one host; item 16: no token in any log --------------------------
def test_two_servers_on_one_project_keep_their_own_logs_and_no_token_is_logged(
    sqlite_project: Project,
) -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as first_socket,
        socket.create_server(("127.0.0.1", 0)) as second_socket,
    ):
        first = TrackingProcess(sqlite_project, first_socket, log_level="info")
        second = TrackingProcess(sqlite_project, second_socket, log_level="info")
        engine = sent_campaign(sqlite_project, first.url, people=2)
        paths = click_paths(engine)[:6]
        first.start()
        second.start()
        directory = spool_dir(engine)
        assert len(list(directory.glob("*.lock"))) == 2  # one log per process
        outbox = getattr(engine, "memory_outbox")  # noqa: B009
        unsubscribe = urlsplit(outbox[0].headers["List-Unsubscribe"].strip("<>")).path
        for index, path in enumerate(paths):
            base = (first, second)[index % 2].url
            answer = httpx.get(base + path, headers={"user-agent": HUMAN_UA}, trust_env=False)
            assert answer.status_code == 302
        assert httpx.get(first.url + unsubscribe, trust_env=False).status_code == 200
        wanted = {clicked(engine, path) for path in paths}
        wait_for(lambda: set(stored_clicks(engine)) == wanted, "both servers' clicks stored")
        output = first.stop() + second.stop()
    assert list(directory.iterdir()) == []  # each cleaned up its own log on shutdown
    assert "GET /c/… HTTP/1.1" in output and "GET /u/… HTTP/1.1" in output
    for path in [*paths, unsubscribe]:
        token = path.rsplit("/", 1)[1]
        assert token[:12] not in output  # not even a prefix of a token


# -- the writer process ------------------------------------------------------------------
def writer_children(pid: int) -> list[int]:
    """The live processes ``pid`` started (the server's intake writer), from any thread."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def test_a_killed_writer_process_is_restarted_and_stores_every_click(
    sqlite_project: Project, listener: socket.socket
) -> None:
    server = TrackingProcess(sqlite_project, listener)
    engine = sent_campaign(sqlite_project, server.url, people=2)
    paths = click_paths(engine)[:4]
    server.start()
    assert server.child is not None
    pid = server.child.pid
    wait_for(lambda: len(writer_children(pid)) == 1, "the writer process")
    [writer] = writer_children(pid)  # the database writer runs apart
    http = httpx.Client(base_url=server.url, headers={"user-agent": HUMAN_UA}, trust_env=False)
    assert http.get(paths[0]).status_code == 302
    wait_for(lambda: len(stored_clicks(engine)) == 1, "the first click stored")
    os.kill(writer, signal.SIGKILL)
    for path in paths[1:]:  # acknowledged while no writer runs: they wait in the log
        assert http.get(path).status_code == 302
    wanted = {clicked(engine, path) for path in paths}
    wait_for(lambda: set(stored_clicks(engine)) == wanted, "the restarted writer to store them")
    assert writer not in writer_children(pid)
    server.stop()
    assert sorted(stored_clicks(engine)) == sorted(wanted)
    assert list(spool_dir(engine).iterdir()) == []
