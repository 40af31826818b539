"""``tailormail archive``: the rows of runs that ended before a cutoff leave the database
for one file per run, with decisions and outcomes but nobody's identity; younger runs,
suppressions and everything a cap or a reward still needs stay; an archived run is never
resumed (everyone would look unsent)."""

from __future__ import annotations

import gzip
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from kit.cli import cli
from kit.project import TEST_SECRET, Project
from sqlalchemy import func, select, update

from engine.app import Engine
from engine.db import session_scope
from engine.ledger import archive as archive_module
from engine.ledger.archive import ARCHIVED, read_archive
from engine.ledger.statements import LEDGER
from engine.models import EventRow, RewardRow, RunRow, SuppressionRow, utcnow
from engine.sending.real_run import run_campaign

OLD = timedelta(days=400)


@pytest.fixture
def sent(project: Project, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """Two runs of ``alerts`` to 12 people: ``old`` ended 400 days ago, ``new`` now; each
    send of ``old`` has a click, and a reward."""
    monkeypatch.setenv("TAILORMAIL_SECRET", TEST_SECRET)
    monkeypatch.chdir(project.root)
    engine = project.configure("memory")
    project.seed(engine, people=12)
    for run_id in ("old", "new"):
        assert run_campaign(engine, "alerts", run_id=run_id).sent == 12
    with session_scope(engine.db) as session:
        long_ago = utcnow() - OLD
        session.execute(
            update(RunRow)
            .where(RunRow.id == "old")
            .values(started_at=long_ago, finished_at=long_ago)
        )
        ids = session.scalars(select(LEDGER.c.id).where(LEDGER.c.run_id == "old")).all()
        for send_id in ids:
            session.add(
                EventRow(
                    send_id=send_id, type="click", timestamp=long_ago, url="https://x.example/"
                )
            )
            session.add(
                RewardRow(send_id=send_id, campaign="alerts", reward=1.0, event_types=["click"])
            )
        session.add(SuppressionRow(email="user3@example.com", reason="unsubscribe"))
    return engine


def count(engine: Engine, table: Any, *where: Any) -> int:
    with session_scope(engine.db) as session:
        return int(session.scalar(select(func.count()).select_from(table).where(*where)) or 0)


def run_status(engine: Engine, run_id: str) -> str:
    with session_scope(engine.db) as session:
        return str(session.scalar(select(RunRow.status).where(RunRow.id == run_id)))


def test_archive_moves_old_runs_to_files_without_identities(
    sent: Engine, project: Project, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    assert cli(monkeypatch, "archive", "--before", "180d", "--yes") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Archived 1 run(s): 12 ledger rows, 12 events and 12 rewards" in out

    files = list((project.root / "archive" / "alerts").glob("*.jsonl.gz"))
    assert [f.name.startswith("old-") for f in files] == [True]
    lines = list(read_archive(files[0]))
    assert lines[0]["kind"] == "run" and lines[0]["run"] == "old"
    assert lines[-1] == {"kind": "end", "sends": 12, "events": 12, "rewards": 12}
    sends = lines[1:-1]
    assert {s["variant"] for s in sends} <= {"a", "b"} and all(s["probability"] for s in sends)
    assert all(s["reward"]["reward"] == 1.0 and s["events"][0]["type"] == "click" for s in sends)
    text = gzip.decompress(files[0].read_bytes()).decode()
    for identity in ("@example.com", "u00", "https://", "<"):  # address, id, links, Message-ID
        assert identity not in text

    assert count(sent, LEDGER, LEDGER.c.run_id == "old") == 0
    assert count(sent, EventRow.__table__) == 0 and count(sent, RewardRow.__table__) == 0
    assert count(sent, LEDGER, LEDGER.c.run_id == "new") == 12  # younger: stays
    assert count(sent, SuppressionRow.__table__) == 1  # the unsubscribe is not the ledger's
    assert run_status(sent, "old") == ARCHIVED and run_status(sent, "new") == "finished"

    assert cli(monkeypatch, "archive", "--before", "180d", "--yes") == 0  # nothing left
    assert "nothing to archive" in capsys.readouterr().out


def test_an_archived_run_is_never_resumed(
    sent: Engine, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    assert cli(monkeypatch, "archive", "--before", "180d", "--yes") == 0
    assert cli(monkeypatch, "send", "alerts", "--run", "old") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "run old was archived" in err and "cannot be resumed" in err
    assert count(sent, LEDGER, LEDGER.c.run_id == "old") == 0  # nobody was mailed again


@pytest.mark.parametrize(
    ("before", "phrase"),
    [
        ("30m", "must be longer than campaign 'alerts': reward.attribution_window (1h)"),
        ("30", "30"),  # a bare number: the forms with units
        ("soon", "'soon' is not a duration"),
    ],
)
def test_a_cutoff_the_rewards_need_or_not_a_duration_is_refused(
    sent: Engine, monkeypatch: pytest.MonkeyPatch, capsys: Any, before: str, phrase: str
) -> None:
    assert cli(monkeypatch, "archive", "--before", before, "--yes") == 2
    assert phrase in " ".join(capsys.readouterr().err.split())
    assert count(sent, LEDGER) == 24


def test_a_dry_run_lists_and_archives_nothing(
    sent: Engine, project: Project, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    assert cli(monkeypatch, "archive", "--before", "180d", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "1 run(s) ended before" in out and "would archive" in out and "old" in out
    assert count(sent, LEDGER) == 24
    assert not (project.root / "archive").exists()


def test_rows_written_while_a_run_is_archived_keep_the_run_whole(
    sent: Engine, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is written first; if the run gained a row meanwhile, nothing is deleted
    and archiving again writes the file again, whole."""
    real = archive_module._chunks

    def and_one_more(db: Any, run_id: str) -> Any:
        yield from real(db, run_id)
        with session_scope(db) as session:
            session.execute(
                LEDGER.insert().values(
                    run_id=run_id,
                    campaign="alerts",
                    recipient_id="late",
                    email="l@x.example",
                    decision_id="late",
                    status="skipped",
                    created_at=utcnow(),
                )
            )

    monkeypatch.setattr(archive_module, "_chunks", and_one_more)
    runs = archive_module.ended_runs(sent.db, utcnow() - timedelta(days=180))
    with pytest.raises(RuntimeError, match="changed while it was archived"):
        archive_module.archive_run(sent.db, runs[0], project.root / "archive")
    assert count(sent, LEDGER, LEDGER.c.run_id == "old") == 13
    assert count(sent, EventRow.__table__) == 12 and run_status(sent, "old") == "finished"

    monkeypatch.setattr(archive_module, "_chunks", real)
    runs = archive_module.ended_runs(sent.db, utcnow() - timedelta(days=180))
    done = archive_module.archive_run(sent.db, runs[0], project.root / "archive")
    assert done.rows == 13 and done.path is not None
    assert list(read_archive(done.path))[-1]["sends"] == 13
    assert count(sent, LEDGER, LEDGER.c.run_id == "old") == 0
    assert not list(Path(project.root / "archive").rglob("*.partial"))


def test_a_run_id_or_campaign_name_never_leaves_the_archive_directory(tmp_path: Path) -> None:
    """Run ids come from schedules and ``--run``; a hostile one names one file inside."""
    names = {archive_module._file_name(run_id) for run_id in ("../../etc/x", "a/b", "a_b", "..")}
    assert len(names) == 4  # two ids that clean alike still differ
    for name in names | {archive_module._safe(".."), archive_module._safe("../c")}:
        assert "/" not in name and not name.startswith(".")
        assert (tmp_path / name).resolve().parent == tmp_path.resolve()
