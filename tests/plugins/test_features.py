"""Built-in context features: attributes without personal data, mailbox provider, local
time, and engagement history computed per batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from kit.project import Project
from sqlalchemy import event
from sqlmodel import Session, select

from engine import EventType, Recipient, TrackingEvent
from engine.audience.importer import import_file
from engine.clock import SimulatedClock, use_clock
from engine.feedback.events import record_event
from engine.models import LedgerRow
from engine.sending.real_run import run_campaign
from plugins.features import email_provider, is_personal, local_time, record_features
from plugins.features_history import history_features

MONDAY_9AM = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "name",
    ["first_name", "lastName", "Surname", "home_address", "phoneNumber", "date_of_birth",
     "email2", "zip", "postal_code", "ip", "FullName"],
)  # fmt: skip
def test_personal_attributes_are_denied(name: str) -> None:
    assert is_personal(name)


@pytest.mark.parametrize("name", ["segment", "device", "age_band", "tier", "tip_rate", "mobile"])
def test_other_attributes_are_features(name: str) -> None:
    assert not is_personal(name)


def test_record_features_drop_personal_data_and_follow_allow_and_deny() -> None:
    person = Recipient(
        "u1",
        "Ada.L@GoogleMail.com",
        {"first_name": "Ada", "phone": "+33 1 23", "segment": "a", "tier": 3, "note": ""},
    )
    assert record_features(person, MONDAY_9AM) == {
        "segment": "a",
        "tier": 3,
        "email_provider": "gmail",
    }
    only = record_features(person, MONDAY_9AM, allow=["first_name", "segment"])
    assert only == {"first_name": "Ada", "segment": "a", "email_provider": "gmail"}
    fewer = record_features(person, MONDAY_9AM, deny=["tier", "email_provider"])
    assert fewer == {"segment": "a"}


def test_email_provider_groups_domains_never_names_them() -> None:
    assert email_provider("a@gmail.com") == email_provider("b@googlemail.com") == "gmail"
    assert email_provider("a@Hotmail.com") == email_provider("b@outlook.com") == "microsoft"
    assert email_provider("a@icloud.com") == "apple"
    assert email_provider("ceo@acme-corp.example") == "other"
    assert email_provider("no-at-sign") == "other" and email_provider("a@") is None


def test_local_hour_and_weekday_in_the_recipients_zone() -> None:
    assert local_time({"timezone": "Europe/Paris"}, MONDAY_9AM) == {
        "local_hour": "10",
        "local_weekday": "mon",
    }
    assert local_time({"tz": "America/New_York"}, MONDAY_9AM)["local_hour"] == "04"
    sunday = local_time({"time_zone": "Pacific/Honolulu"}, MONDAY_9AM - timedelta(hours=9))
    assert sunday == {"local_hour": "14", "local_weekday": "sun"}
    assert local_time({"timezone": "Mars/Olympus"}, MONDAY_9AM) == {}
    assert local_time({}, MONDAY_9AM) == {}


PEOPLE = """id,email,first_name,segment,timezone
u0,ada@gmail.com,Ada,a,Europe/Paris
u1,alan@yahoo.com,Alan,b,Asia/Tokyo
u2,grace@example.org,Grace,a,
"""


def contexts(engine: object, run_id: str) -> dict[str, dict[str, object]]:
    with Session(engine.db) as session:  # type: ignore[attr-defined]
        rows = session.exec(select(LedgerRow).where(LedgerRow.run_id == run_id)).all()
    return {row.recipient_id: dict(row.context or {}) for row in rows}


def test_engagement_history_reaches_the_context(sqlite_project: Project) -> None:
    sqlite_project.add_campaign("daily")
    engine = sqlite_project.engine()
    (sqlite_project.root / "people.csv").write_text(PEOPLE)
    import_file(engine.db, "recipients", sqlite_project.root / "people.csv")
    import_file(engine.db, "items", sqlite_project.write_items())
    clock = SimulatedClock(MONDAY_9AM)
    with use_clock(clock):
        run_campaign(engine, "daily", run_id="day-1")
        with Session(engine.db) as session:
            rows = {r.recipient_id: r for r in session.exec(select(LedgerRow)).all()}
        clicked = rows["u0"]
        at = MONDAY_9AM + timedelta(hours=2)
        record_event(engine, TrackingEvent(EventType.CLICK, clicked.id, at, url="x"))
        scanner = TrackingEvent(EventType.CLICK, rows["u1"].id, at, url="x", bot=True)
        record_event(engine, scanner)  # a link scanner is no engagement
        clock.advance(timedelta(days=1))
        run_campaign(engine, "daily", run_id="day-2")
        clock.advance(timedelta(days=31))
        run_campaign(engine, "daily", run_id="day-33")
    first, second, later = (contexts(engine, r) for r in ("day-1", "day-2", "day-33"))
    assert first["u0"] == {
        "segment": "a",
        "timezone": "Europe/Paris",
        "email_provider": "gmail",
        "local_hour": "10",
        "local_weekday": "mon",
    }
    assert second["u0"]["local_weekday"] == "tue"
    assert {k: second["u0"][k] for k in ("sends_30d", "clicks_30d", "days_since_last_click")} == {
        "sends_30d": 1,
        "clicks_30d": 1,
        "days_since_last_click": 0.9,
    }
    assert second["u0"]["engagement"] == {clicked.variant: 1}
    assert second["u1"]["sends_30d"] == 1 and "clicks_30d" not in second["u1"]
    assert "engagement" not in second["u1"] and "local_hour" not in second["u2"]
    # A month later only the click's age is left.
    assert later["u0"]["days_since_last_click"] == 31.9 and "sends_30d" not in later["u0"]


def test_history_is_two_queries_per_batch_and_can_be_turned_off(
    sqlite_project: Project,
) -> None:
    sqlite_project.add_campaign("quiet", extra="[features]\nhistory = false\n")
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=40)
    run_campaign(engine, "alerts", run_id="r1")
    campaign = engine.campaign("alerts")
    statements: list[str] = []
    event.listen(engine.db, "before_cursor_execute", lambda *a: statements.append(a[2]))
    features = history_features(engine.db, campaign, [f"u{i:03d}" for i in range(40)])
    assert len(statements) == 2
    assert len(features) == 40 and all(f == {"sends_30d": 1} for f in features.values())
    quiet = engine.context_for(engine.campaign("quiet"), engine.audience(campaign)[0])
    assert "sends_30d" not in quiet and quiet["segment"] == "a"
