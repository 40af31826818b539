"""SIGKILL of the API server under trigger load, restarted: every trigger it acknowledged
(202) is sent exactly once over real SMTP, or is ``unknown`` within the in-flight bound
(the rows with the transport when it died: one release batch)."""

from __future__ import annotations

import email
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from kit.project import ROOT, Project
from kit.sending import smtp_project
from kit.smtp import Mailbox, serve
from kit.triggers import add_triggered_campaign, drop
from sqlmodel import Session, col, select

from engine.api_keys import create_key
from engine.models import LedgerRow
from engine.sending.release import BATCH

SECRET = "test-secret-0123456789-0123456789-01"
DEADLINE = 60.0


class ApiProcess:
    """``python -m engine.web --api`` on a listening socket the test keeps open."""

    def __init__(self, project: Project, sock: socket.socket) -> None:
        self.project = project
        self.sock = sock
        self.child: subprocess.Popen[str] | None = None
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    def start(self) -> ApiProcess:
        fd = self.sock.fileno()
        env = os.environ | {
            "TAILORMAIL_SECRET": SECRET,
            "PYTHONPATH": str(ROOT),
            "TAILORMAIL_API__RATE_LIMIT_PER_SECOND": "1e9",
        }
        self.child = subprocess.Popen(
            [sys.executable, "-m", "engine.web", "--api", "-p", str(self.project.root)]
            + ["--fd", str(fd)],
            pass_fds=[fd],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + DEADLINE
        while True:
            if self.child.poll() is not None:
                pytest.fail(f"the API server exited: {self.child.communicate()[0]}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=5, trust_env=False).is_success:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the API server did not answer /v1/health")
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.child is not None
        self.child.send_signal(signal.SIGKILL)
        self.child.communicate(timeout=DEADLINE)

    def stop(self) -> None:
        assert self.child is not None
        self.child.send_signal(signal.SIGTERM)
        self.child.communicate(timeout=DEADLINE)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0), backlog=1024) as sock:
        yield sock


class Load:
    """Threads triggering alerts until stopped; the trigger ids acknowledged with 202."""

    def __init__(self, url: str, key: str, people: int, threads: int = 8) -> None:
        self.url = url
        self.key = key
        self.people = people
        self.acknowledged: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]

    def _run(self, n: int) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        path = "/v1/campaigns/pricedrop/trigger"
        with httpx.Client(base_url=self.url, timeout=10, trust_env=False) as client:
            i = 0
            while not self._stop.is_set():
                i += 1
                body = drop(f"u{(n * 7 + i) % self.people:03d}", event_id=f"t{n}-{i}")
                try:
                    answer = client.post(path, json=body, headers=headers)
                except httpx.HTTPError:
                    time.sleep(0.05)  # the server is down: not acknowledged
                    continue
                if answer.status_code == 202:
                    self.acknowledged.append(answer.json()["trigger_id"])

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(DEADLINE)

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + DEADLINE
        while len(self.acknowledged) < count:
            assert time.monotonic() < deadline, f"only {len(self.acknowledged)} acknowledged"
            time.sleep(0.02)


def test_sigkill_under_trigger_load_loses_and_repeats_nothing(
    project: Project, listener: socket.socket
) -> None:
    mailbox = Mailbox()
    with serve(mailbox) as port:
        add_triggered_campaign(project, policy="uniform")
        engine = smtp_project(project, port, people=40)
        _, key = create_key(engine.db, "load", ["trigger"])
        api = ApiProcess(project, listener).start()
        with Load(api.url, key, people=40) as load:
            load.wait_for(150)
            api.kill()  # in the middle of the load: requests in flight, rows being sent
            killed_at = len(load.acknowledged)
            api = ApiProcess(project, listener).start()
            load.wait_for(killed_at + 150)
        acknowledged = set(load.acknowledged)

        def settled() -> bool:
            with Session(engine.db) as session:
                waiting = session.exec(
                    select(LedgerRow).where(
                        col(LedgerRow.status).in_(["scheduled", "pending", "deferred"])
                    )
                ).all()
            return not waiting

        deadline = time.monotonic() + DEADLINE
        while not settled():
            assert time.monotonic() < deadline, "rows still waiting to be sent"
            time.sleep(0.2)
        api.stop()
    with Session(engine.db) as session:
        rows = {r.trigger_id: r for r in session.exec(select(LedgerRow)).all()}
    missing = acknowledged - set(rows)
    assert not missing, f"{len(missing)} acknowledged triggers have no ledger row"
    statuses = Counter(rows[t].status for t in acknowledged)
    assert set(statuses) <= {"sent", "unknown"}, statuses
    assert statuses["unknown"] <= BATCH, statuses
    delivered = Counter(
        email.message_from_bytes(envelope.content)["Message-ID"] for _, envelope in mailbox.received
    )
    twice = {m: n for m, n in delivered.items() if n > 1}
    assert not twice, f"sent more than once: {twice}"
    sent_ids = {rows[t].message_id for t in acknowledged if rows[t].status == "sent"}
    assert sent_ids <= set(delivered), "a row marked sent never reached the server"
