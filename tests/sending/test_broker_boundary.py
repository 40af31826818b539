"""The broker is a trust boundary: a real ``tailormail worker`` on Redis obeys only its own
project. An attacker with a plain Celery client and no project secret puts tasks on the
queue; every one is refused in one log line and acknowledged, and nothing leaves: no
message, no environment value, no ledger row. A genuine task still runs.

One worker process serves the module (starting one costs seconds of CI); the attacks run in
one test, so pytest-xdist cannot spread them over workers that would each start their own.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kit.project import TEST_SECRET, Project, stop_processes, toml_text
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from engine.app import Engine
from engine.models import LedgerRow, RunRow, utcnow
from engine.sending.pipeline import CampaignRun
from engine.sending.real_run import real_run
from engine.sending.shard_tasks import ShardTask, sign_task
from engine.settings import load_settings

celery = pytest.importorskip("celery")
redis = pytest.importorskip("redis")

# Databases of their own: no other test's worker answers this module's broadcasts.
BROKER = "redis://127.0.0.1:6379/12"
RESULTS = "redis://127.0.0.1:6379/13"
CANARY = "canary-" + uuid.uuid4().hex  # the worker's "AWS secret": must never leave it
PEOPLE = 12
pytestmark = pytest.mark.slow


class Listener(ThreadingHTTPServer):
    """An HTTP server on loopback that records every request it gets (none, we hope)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                listener.requests.append((self.path, dict(self.headers), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        """The URL the attacker's settings point at."""
        return f"http://127.0.0.1:{self.server_address[1]}/steal"


@dataclass
class Broker:
    """The module's worker, its project, an open run it may work on, and an attacker."""

    root: Path
    engine: Engine
    queue: str
    log: Path
    open_run: CampaignRun
    closed_run: str
    stale_run: str
    attacker: Any
    listener: Listener

    def task(self, run_id: str, engine: Engine | None = None) -> dict[str, Any]:
        """What a coordinator of this project (or of ``engine``'s settings) would sign."""
        shard = ShardTask(run_id, "alerts", "", None, self.open_run.ledger.model_version())
        return sign_task(engine or self.engine, shard)

    def send(self, *args: Any) -> Any:
        """Put a raw ``tailormail.run_shard`` task on the queue, as anyone on Redis can."""
        return self.attacker.send_task("tailormail.run_shard", args=list(args), queue=self.queue)

    def refusals(self) -> list[str]:
        """The worker's refusal lines so far."""
        return [ln for ln in self.log.read_text().splitlines() if "refused a shard task" in ln]


def _wait(check: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds  # fails only on a hang
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _engine(root: Path, **overrides: Any) -> Engine:
    settings = load_settings(root, environ={"TAILORMAIL_SECRET": TEST_SECRET}, overrides=overrides)
    return Engine(settings=settings)  # entry points on, like the worker's


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A project on SQLite with ``tailormail worker`` running for it on a queue of its own."""
    root = tmp_path_factory.mktemp("broker") / "project"
    project = Project(root, f"sqlite:///{root.parent}/tailormail.db")
    queue = f"tm-boundary-{uuid.uuid4().hex[:8]}"
    config = {
        "database_url": project.db_url,
        "delivery": {"backend": "outbox"},
        "workers": {
            "executor": "celery",
            "celery": {"broker_url": BROKER, "result_backend": RESULTS, "queue": queue},
        },
    }
    (root / "config" / "tailormail.toml").write_text(toml_text(config))
    engine = _engine(root)
    project.seed(engine, people=PEOPLE)
    project.add_campaign("other")
    engine = _engine(root)  # sees the second campaign
    closed = real_run(engine, engine.campaign("alerts"), "closed-run")
    closed._open_run(None)
    closed.ledger.close("finished")
    stale = real_run(engine, engine.campaign("alerts"), "stale-run")
    stale._open_run(None)
    stale.ledger.close("running")  # its coordinator died: still "running", never heard again
    with Session(engine.db) as session:
        session.execute(
            update(RunRow)
            .where(RunRow.id == "stale-run")  # type: ignore[arg-type]
            .values(heartbeat_at=utcnow() - timedelta(hours=1))
        )
        session.commit()
    run = real_run(engine, engine.campaign("alerts"), "open-run")
    run._open_run(None)  # a live coordinator: running, heartbeat renewed
    # The worker reads the secret file, as a default deployment does (the issue's worker).
    secret = root / ".tailormail-secret"
    secret.write_text(TEST_SECRET + "\n")
    secret.chmod(0o600)
    log = root / "worker.log"
    env = {k: v for k, v in os.environ.items() if k != "TAILORMAIL_SECRET"}
    env["AWS_SECRET_ACCESS_KEY"] = CANARY
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "engine", "worker", "-p", str(root), "--pool", "solo"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
        )
    listener = Listener()
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    attacker = celery.Celery("attacker", broker=BROKER, backend=RESULTS)
    try:
        _wait(lambda: "ready." in log.read_text() or worker.poll() is not None, "the worker")
        assert worker.poll() is None, log.read_text()
        yield Broker(root, engine, queue, log, run, "closed-run", "stale-run", attacker, listener)
    finally:
        stop_processes([worker])
        listener.shutdown()
        run.ledger.close("finished")
        attacker.close()


def _the_issues_attack(broker: Broker) -> list[Any]:
    """The task of issue 17: the coordinator's settings format, bent to exfiltrate."""
    settings = {
        "project_dir": str(broker.root),
        "secret_file": "/proc/sys/kernel/ostype",
        "disabled_plugins": ["plugins.eligibility", "plugins.forgotten"],
        "delivery": {
            "backend": "http_json",
            "options": {
                "http_json": {"url": broker.listener.url, "token_env": "AWS_SECRET_ACCESS_KEY"}
            },
        },
        # main's fingerprint of the secret, computed from the file the payload names
        "secret_check": hashlib.sha256(b"tailormail shard secret check\0Linux").hexdigest()[:16],
    }
    return [settings, "alerts", "open-run", "", None]


def _with(task: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return task | changes


def _without(task: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in task.items() if k != field}


def _forged_mac(task: dict[str, Any]) -> str:
    body = {k: v for k, v in task.items() if k != "mac"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(b"a guessed key", canonical, hashlib.sha256).hexdigest()


ATTACKS: dict[str, tuple[Callable[[Broker], list[Any]], str]] = {
    "the-issues-settings-payload": (_the_issues_attack, "malformed task: 5 arguments"),
    "settings-added-to-a-signed-task": (
        lambda b: [_with(b.task("open-run"), settings={"secret_file": "/etc/hostname"})],
        "malformed task: unexpected fields ['settings']",
    ),
    "its-run-changed-after-signing": (
        lambda b: [_with(b.task("closed-run"), run="open-run")],
        "MAC does not verify",
    ),
    "its-fingerprint-changed-after-signing": (
        lambda b: [_with(b.task("open-run"), fingerprint={"backend": "http_json"})],
        "MAC does not verify",
    ),
    "a-forged-mac": (
        lambda b: [_with(t := b.task("open-run"), mac=_forged_mac(t))],
        "MAC does not verify",
    ),
    "no-mac": (lambda b: [_without(b.task("open-run"), "mac")], "carries no MAC"),
    "expired-its-run-finished": (
        lambda b: [b.task(b.closed_run)],
        "run 'closed-run' is finished, not running",
    ),
    "its-runs-coordinator-is-gone": (
        lambda b: [b.task(b.stale_run)],
        "run 'stale-run' was last heard from 36",  # 3600 s ago
    ),
    "a-run-that-does-not-exist": (
        lambda b: [b.task("no-such-run")],
        "run 'no-such-run' does not exist",
    ),
    "a-coordinator-with-another-backend": (
        lambda b: [b.task("open-run", _engine(b.root, delivery={"backend": "memory"}))],
        "the coordinator's backend ('memory') differs from this worker's ('outbox')",
    ),
}


def _outbox(broker: Broker) -> set[str]:
    return {p.name for p in (broker.root / "outbox").glob("*")}


def _ledger_rows(broker: Broker) -> int:
    with Session(broker.engine.db) as session:
        return int(session.scalar(select(func.count()).select_from(LedgerRow)) or 0)


def _runs(broker: Broker) -> set[str]:
    with Session(broker.engine.db) as session:
        return set(session.scalars(select(RunRow.id)))  # type: ignore[arg-type]


def _on_the_broker(queue: str, task_id: str) -> bool:
    """Whether the task is still queued or delivered but unacknowledged."""
    client = redis.Redis.from_url(BROKER)
    try:
        unacked = any(task_id.encode() in value for value in client.hvals("unacked"))
        return unacked or client.llen(queue) > 0
    finally:
        client.close()


def _refused(broker: Broker, attack: str) -> None:
    """Send ``attack``'s task and check that it was refused, in one line, and had no effect."""
    build, reason = ATTACKS[attack]
    outbox, rows, runs = _outbox(broker), _ledger_rows(broker), _runs(broker)
    before = len(broker.refusals())
    result = broker.send(*build(broker))
    result.get(timeout=60, propagate=False)
    assert result.state == "FAILURE", attack  # refused, not run
    _wait(lambda: not _on_the_broker(broker.queue, result.id), f"{attack}: its ack", 10)
    refused = broker.refusals()[before:]
    assert len(refused) == 1 and reason in refused[0], (attack, refused)
    assert reason in str(result.result), attack  # what the coordinator reports (shard_errors)
    assert (_outbox(broker), _ledger_rows(broker), _runs(broker)) == (outbox, rows, runs), attack
    assert broker.listener.requests == [], attack


def test_a_worker_refuses_every_task_it_cannot_trust_and_still_sends_a_genuine_one(
    broker: Broker,
) -> None:
    for attack in ATTACKS:
        _refused(broker, attack)
    # Remote control is off: no broker writer can ping, reconfigure or shut down a worker.
    assert broker.attacker.control.ping(timeout=1.0) == []
    log = broker.log.read_text()
    assert "Traceback" not in log and CANARY not in log
    # The same worker sends a genuine task of an open run (of another campaign: one run
    # of a campaign at a time), so the refusals above were its checks, not a broken setup.
    run = real_run(broker.engine, broker.engine.campaign("other"), "genuine-run")
    run._open_run(None)
    try:
        task = sign_task(broker.engine, ShardTask("genuine-run", "other", "", None, None))
        counts = broker.send(task).get(timeout=60)
    finally:
        run.ledger.close("finished")
    assert counts["sent"] == PEOPLE
    assert len(_outbox(broker)) == PEOPLE
    with Session(broker.engine.db) as session:
        stmt = select(LedgerRow.owner).where(LedgerRow.run_id == "genuine-run")  # type: ignore[arg-type]
        owners = set(session.scalars(stmt))
    assert len(owners) == 1 and broker.listener.requests == []
