"""One write path: a single event and a batch of them store events and suppressions alike."""

from __future__ import annotations

from kit.project import Project
from sqlmodel import Session, col, select

from engine import EventType, TrackingEvent
from engine.app import Engine
from engine.feedback.events import record_event, record_events
from engine.models import CampaignSuppressionRow, EventRow, LedgerRow, SuppressionRow, utcnow
from engine.sending.real_run import run_campaign


def test_one_event_and_a_batch_write_the_same_rows(sqlite_project: Project) -> None:
    eng: Engine = sqlite_project.engine()
    sqlite_project.seed(eng, people=3)
    run_campaign(eng, "alerts", run_id="r1")
    with Session(eng.db) as session:
        rows = list(session.exec(select(LedgerRow).order_by(col(LedgerRow.id))).all())
    one, two, three = (r.id for r in rows)
    unsubscribe = EventType.UNSUBSCRIBE
    assert record_event(eng, TrackingEvent(unsubscribe, one, utcnow()), dedupe_key="k1")
    assert not record_event(eng, TrackingEvent(unsubscribe, one, utcnow()), dedupe_key="k1")
    batch = [
        (TrackingEvent(unsubscribe, two, utcnow()), "k2"),
        (TrackingEvent(unsubscribe, three, utcnow(), data={"scope": "campaign"}), "k3"),
        (TrackingEvent(unsubscribe, two, utcnow()), "k1"),  # stored above: skipped
    ]
    assert record_events(eng, batch) == 2
    with Session(eng.db) as session:
        keys = sorted(str(e.dedupe_key) for e in session.exec(select(EventRow)).all())
        everywhere = session.exec(select(SuppressionRow).order_by(col(SuppressionRow.send_id)))
        scoped = session.exec(select(CampaignSuppressionRow)).all()
        suppressed = [(s.email, s.reason, s.send_id) for s in everywhere.all()]
        scoped_rows = [(s.email, s.campaign, s.send_id) for s in scoped]
    assert keys == ["k1", "k2", "k3"]
    assert suppressed == [
        (rows[0].email.lower(), "unsubscribe", one),
        (rows[1].email.lower(), "unsubscribe", two),
    ]
    assert scoped_rows == [(rows[2].email.lower(), "alerts", three)]
