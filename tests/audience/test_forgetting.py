"""Forgetting a person on request, and everyone's old data on schedule (issue 5 item 19)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from kit.project import Project
from sqlmodel import col, select

from engine import EventType, TrackingEvent
from engine.app import Engine
from engine.audience.forgetting import ERASED, UnknownRecipientError, apply_retention, forget
from engine.audience.importer import import_file
from engine.db import session_scope
from engine.errors import ConfigError
from engine.feedback.events import record_event
from engine.feedback.reward_job import join_rewards
from engine.models import (
    CampaignSuppressionRow,
    EventRow,
    ForgottenAddressRow,
    InteractionRow,
    LedgerRow,
    RecipeFitRow,
    RecipientRow,
    RewardRow,
    SuppressionRow,
    utcnow,
)
from engine.sending.real_run import run_campaign
from plugins.delivery.outbox import eml_name

HUMAN = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"


def rows(engine: Engine, model: Any, *where: Any) -> list[Any]:
    with session_scope(engine.db) as session:
        return list(session.scalars(select(model).where(*where)).all())


def sent_with_a_click(project: Project, engine: Engine) -> LedgerRow:
    """Seed, send run r1, store a click and a campaign unsubscribe on u001's email."""
    project.seed(engine, people=4)
    events = project.root / "events.csv"
    events.write_text("user_id,item_id,timestamp\nu001,i1,1709294400\nu002,i2,1709294400\n")
    import_file(engine.db, "interactions", events)
    run_campaign(engine, "alerts", run_id="r1")
    [row] = rows(engine, LedgerRow, col(LedgerRow.recipient_id) == "u001")
    assert row.id is not None and row.sent_at is not None
    click = TrackingEvent(EventType.CLICK, row.id, row.sent_at, url=row.links[0], user_agent=HUMAN)  # type: ignore[index]
    record_event(engine, click)
    with session_scope(engine.db) as session:
        session.add(CampaignSuppressionRow(email=row.email, campaign="other", send_id=row.id))
    return row


@pytest.mark.parametrize("who", ["u001", "USER1@example.com"])
def test_forget_erases_a_person_and_keeps_what_learning_needs(project: Project, who: str) -> None:
    engine = project.engine(backend="memory")
    row = sent_with_a_click(project, engine)
    assert rows(engine, RecipeFitRow)  # the run stored the recipe's fit

    summary = forget(engine, who)

    assert summary.recipient_ids == ("u001",) and summary.addresses == 1
    assert rows(engine, RecipientRow, col(RecipientRow.id) == "u001") == []
    assert [i.user_id for i in rows(engine, InteractionRow)] == ["u002"]
    assert rows(engine, CampaignSuppressionRow) == [] and rows(engine, RecipeFitRow) == []
    [erased] = rows(engine, LedgerRow, col(LedgerRow.id) == row.id)
    assert erased.email == ERASED and erased.recipient_id.startswith("erased:")
    assert erased.decision_id != row.decision_id
    assert (erased.context, erased.items, erased.links, erased.message_id) == (None,) * 4
    # The decision stays, as logged: learning and evaluation still have it.
    assert (erased.variant, erased.probability, erased.pmf, erased.offered) == (
        row.variant,
        row.probability,
        row.pmf,
        row.offered,
    )
    [event] = rows(engine, EventRow, col(EventRow.send_id) == row.id)
    assert (event.type, event.user_agent, event.url) == ("click", None, None)
    others = rows(engine, LedgerRow, col(LedgerRow.recipient_id) == "u002")
    assert others and others[0].context is not None  # nobody else is touched

    # The reward is still joined once the window closes.
    join_rewards(engine, now=utcnow() + timedelta(hours=2))
    [reward] = rows(engine, RewardRow, col(RewardRow.send_id) == row.id)
    assert reward.reward == 1.0

    # Only a keyed hash of the address is kept: imported again, they are never mailed.
    [kept] = rows(engine, ForgottenAddressRow)
    assert "user1" not in kept.address_hash and kept.address_hash.startswith("hmac-sha256:")
    assert not any("user1@" in str(s.email) for s in rows(engine, SuppressionRow))
    project.seed(engine, people=4)
    summary2 = run_campaign(engine, "alerts", run_id="r2")
    assert (summary2.sent, summary2.skipped) == (3, 1)
    [skip] = rows(
        engine, LedgerRow, col(LedgerRow.run_id) == "r2", col(LedgerRow.status) == "skipped"
    )
    assert skip.recipient_id == "u001" and "forgotten" in (skip.skip_reason or "")
    assert "user1@example.com" not in {m.to_address for m in engine.memory_outbox[-3:]}
    assert forget(engine, "user1@example.com").ledger_rows == 1  # the skip row of r2
    assert forget(engine, "user1@example.com").already  # asked again: nothing left


def test_forget_of_nobody_is_an_error_naming_it(sqlite_project: Project) -> None:
    engine = sqlite_project.engine()
    with pytest.raises(UnknownRecipientError, match="'nobody@example.com'"):
        forget(engine, "nobody@example.com")
    assert rows(engine, ForgottenAddressRow) == []


def test_retention_anonymizes_old_rows_only(sqlite_project: Project) -> None:
    engine = sqlite_project.engine(retention="30d")
    row = sent_with_a_click(sqlite_project, engine)
    assert apply_retention(engine) is not None
    [kept] = rows(engine, LedgerRow, col(LedgerRow.id) == row.id)
    assert kept.email == row.email and kept.context == row.context  # younger than 30 days

    summary = apply_retention(engine, now=utcnow() + timedelta(days=31))
    assert summary is not None and summary.ledger_rows == 4 and summary.events == 1
    erased = rows(engine, LedgerRow)
    assert {r.email for r in erased} == {ERASED}
    assert all(r.context is None and r.variant for r in erased)
    [event] = rows(engine, EventRow)
    assert event.user_agent is None
    # People are still subscribed: retention erases old data, not the recipients.
    assert len(rows(engine, RecipientRow)) == 4 and rows(engine, ForgottenAddressRow) == []
    again = apply_retention(engine, now=utcnow() + timedelta(days=31))
    assert again is not None and again.ledger_rows == 0


def test_a_retention_shorter_than_what_it_would_erase_stops_start_up(
    sqlite_project: Project,
) -> None:
    with pytest.raises(ConfigError, match=r"retention: 30m must be longer than .*attribution"):
        sqlite_project.engine(retention="30m")
    with pytest.raises(ConfigError, match=r"retention: 2d must be longer than frequency_cap"):
        sqlite_project.engine(retention="2d", frequency_cap="7d")


def test_the_forget_command_asks_first_then_says_what_it_erased(
    sqlite_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from engine.cli.commands import app

    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=2)
    engine.close()
    config = sqlite_project.root / "config" / "tailormail.toml"
    config.write_text(f'database_url = "{sqlite_project.db_url}"\n')
    monkeypatch.setenv("TAILORMAIL_SECRET", "test-secret-0123456789-0123456789-01")
    runner = CliRunner()
    args = ["--project", str(sqlite_project.root), "forget", "u001"]
    declined = runner.invoke(app, args, input="n\n")
    assert declined.exit_code == 1 and "Erase everything about 'u001'?" in declined.output
    assert len(rows(engine, RecipientRow)) == 2
    done = runner.invoke(app, [*args, "--yes"])
    assert done.exit_code == 0, done.output
    assert "Forgot u001 (u001): 1 address(es) kept only as a keyed hash" in done.output
    assert "0 stored messages deleted" in done.output  # u001 was never sent anything
    assert [r.id for r in rows(engine, RecipientRow)] == ["u000"]


def test_forget_and_retention_delete_the_stored_messages_of_the_outbox(
    sqlite_project: Project,
) -> None:
    # An outbox file is the whole email: the address, the name, the picks, the links.
    engine = sqlite_project.engine("outbox", retention="30d")
    row = sent_with_a_click(sqlite_project, engine)
    outbox = sqlite_project.root / "outbox"
    assert row.id is not None and (outbox / eml_name(row.id)).is_file()
    assert len(list(outbox.glob("*.eml"))) == 4

    summary = forget(engine, "u001")

    assert summary.messages == 1 and not (outbox / eml_name(row.id)).exists()
    assert not any("user1@" in path.read_text() for path in outbox.glob("*.eml"))
    assert len(list(outbox.glob("*.eml"))) == 3  # nobody else's
    later = apply_retention(engine, now=utcnow() + timedelta(days=31))
    assert later is not None and (later.ledger_rows, later.messages) == (3, 3)
    assert list(outbox.glob("*.eml")) == []


def unmatched_bounce(address: str) -> TrackingEvent:
    """A provider's bounce naming ``address`` whose message id matches no send."""
    return TrackingEvent(
        EventType.BOUNCE,
        None,
        utcnow(),
        provider_message_id="<sent-by-another-tool@mail.example>",
        recipient_email=address,
        data={"bounce_type": "soft", "reason": f"452 4.2.2 <{address}>: mailbox full"},
    )


def test_forget_finds_and_strips_events_that_name_the_person_without_a_send(
    project: Project,
) -> None:
    engine = project.engine()
    project.seed(engine, people=2)
    record_event(engine, unmatched_bounce("Only_In.Events%1@example.org"), dedupe_key="std:e1")
    record_event(engine, unmatched_bounce("user1@example.com"), dedupe_key="std:e2")
    record_event(engine, unmatched_bounce("onlyXin.events%1@example.org"), dedupe_key="std:e3")

    summary = forget(engine, "only_in.events%1@EXAMPLE.org")  # no recipient, no ledger row

    assert (summary.recipient_ids, summary.addresses, summary.events) == ((), 1, 1)
    stored = {e.dedupe_key: e for e in rows(engine, EventRow)}
    # The event stays (its dedupe key makes a provider's retry a duplicate), naming nobody.
    assert stored["std:e1"].data == {"bounce_type": "soft"}
    assert "events%1" in str(stored["std:e3"].data)  # LIKE's _ and % are literal here
    assert forget(engine, "u001").events == 1  # found through the address it carries
    [e2] = rows(engine, EventRow, col(EventRow.dedupe_key) == "std:e2")
    assert stored["std:e2"].data["_recipient_email"] == "user1@example.com"
    assert (e2.data, e2.url, e2.user_agent) == ({"bounce_type": "soft"}, None, None)
    with pytest.raises(UnknownRecipientError, match="event has the id or address"):
        forget(engine, "nobody@example.org")


def test_a_reader_that_blocks_the_checkpoint_is_named_and_forget_compact_finishes(
    sqlite_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from typer.testing import CliRunner

    from engine.audience import compaction
    from engine.cli.commands import app
    from engine.models import ErasureRow

    monkeypatch.setattr(compaction, "BUSY_MS", 50)  # each attempt waits 50 ms for readers
    monkeypatch.setattr(compaction, "PAUSE", 0.01)
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=3)
    run_campaign(engine, "alerts", run_id="r1")
    engine.close()
    database = sqlite_project.db_url.removeprefix("sqlite:///")
    (sqlite_project.root / "config" / "tailormail.toml").write_text(
        f'database_url = "{sqlite_project.db_url}"\n[delivery]\nbackend = "memory"\n'
    )
    monkeypatch.setenv("TAILORMAIL_SECRET", "test-secret-0123456789-0123456789-01")
    runner = CliRunner()
    args = ["--project", str(sqlite_project.root), "forget"]
    reader = sqlite3.connect(database, isolation_level=None)  # a `serve` in mid-request
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM ledger").fetchone() == (3,)
        blocked = runner.invoke(app, [*args, "user1@example.com", "--yes"])
        assert blocked.exit_code == 1, blocked.output
        assert "Forgot user1@example.com (u001)" in blocked.output
        assert "another process is reading the database" in blocked.output
        assert "run `tailormail forget --compact`" in blocked.output
        # The erased pages wait in the WAL: the file still has the old ones.
        assert b"user1@example.com" in Path(database).read_bytes()
    finally:
        reader.close()

    done = runner.invoke(app, [*args, "--compact"])

    assert done.exit_code == 0, done.output
    assert "database vacuumed; its write-ahead log is empty" in done.output
    wal = Path(database + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    assert b"user1@example.com" not in Path(database).read_bytes()
    records = rows(engine, ErasureRow)
    assert [(r.kind, r.compacted) for r in records] == [("forget", False), ("compact", True)]
    assert (records[0].recipients, records[0].addresses, records[0].ledger_rows) == (1, 1, 1)
    nothing = runner.invoke(app, args)
    assert "forget needs a recipient id or address" in str(nothing.exception)  # main(): exit 2


def test_a_reimported_person_leaves_no_stale_copy_in_the_database_file(
    sqlite_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import event

    import engine.db

    # Debian builds SQLite with secure_delete on; most others (macOS, Python's own builds)
    # do not: play one of those, on every connection the engine opens.
    connect = engine.db.create_engine

    def without_secure_delete(*args: Any, **kwargs: Any) -> Any:
        created = connect(*args, **kwargs)
        off = "PRAGMA secure_delete=OFF"
        event.listen(created, "connect", lambda dbapi, _record: dbapi.execute(off))
        return created

    monkeypatch.setattr(engine.db, "create_engine", without_secure_delete)
    project_engine = sqlite_project.engine()
    sqlite_project.seed(project_engine, people=3)
    people = sqlite_project.root / "people.csv"
    # Each update leaves the row's old version in the page's free space unless it is zeroed.
    for name in ("Zanzibarra", "Zanzibarra Longer", "Zanzibarra Even Longer Still"):
        people.write_text(f"id,email,first_name\nu001,zanzi@example.com,{name}\n")
        import_file(project_engine.db, "recipients", people)
    forget(project_engine, "u001")
    project_engine.close()
    data = Path(sqlite_project.db_url.removeprefix("sqlite:///")).read_bytes()
    assert b"Zanzibarr" not in data and b"zanzi@" not in data
