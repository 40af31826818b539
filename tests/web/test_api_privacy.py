"""What the API stores about people (trigger payloads, stored answers, status webhook
deliveries) goes when they are forgotten, and when it outlives its retention."""

from __future__ import annotations

from datetime import timedelta

from kit.project import Project
from kit.triggers import add_triggered_campaign, drop, serve_api
from sqlmodel import Session, select

from engine.audience.forgetting import forget
from engine.feedback.outbound import OutboundPolicy
from engine.feedback.status_webhooks import add_subscription
from engine.models import IdempotencyRow, TriggerRow, WebhookDeliveryRow, utcnow
from engine.sending.api_retention import purge_api_data
from engine.sending.release import Releaser


def _counts(project: Project) -> tuple[int, int, int]:
    engine = project.engine()
    with Session(engine.db) as session:
        return (
            len(session.exec(select(TriggerRow)).all()),
            len(session.exec(select(IdempotencyRow)).all()),
            len(session.exec(select(WebhookDeliveryRow)).all()),
        )


def test_forget_erases_a_persons_triggers_answers_and_deliveries(project: Project) -> None:
    add_triggered_campaign(project)
    engine = project.engine()
    project.seed(engine, people=4)
    policy = OutboundPolicy(allow_http=True)
    add_subscription(engine.db, "http://127.0.0.1:9/hooks", allow_private=True, policy=policy)
    with serve_api(engine, release=False) as api:
        for person in ("u001", "u002"):
            data = {"kind": "d", "title": f"For {person}", "price": "1", "url": "x"}
            body = drop(person, data=data)
            reply = api.post("/v1/campaigns/pricedrop/trigger", body, **{"Idempotency-Key": person})
            assert reply.status_code == 202
    Releaser(engine).release_due()
    assert _counts(project) == (2, 2, 2)  # a trigger, an answer, a "sent" delivery each
    forget(engine, "u001")
    assert _counts(project) == (1, 1, 1)
    with Session(engine.db) as session:
        left = session.exec(select(TriggerRow)).one()
    assert left.recipient_id == "u002" and left.data["title"] == "For u002"


def test_retention_deletes_old_answers_and_done_triggers(project: Project) -> None:
    add_triggered_campaign(project)
    engine = project.engine(api={"idempotency_retention": "1h", "trigger_retention": "2d"})
    project.seed(engine, people=4)
    later = (utcnow() + timedelta(days=5)).isoformat()
    with serve_api(engine, release=False) as api:
        api.post("/v1/campaigns/pricedrop/trigger", drop("u001"), **{"Idempotency-Key": "a"})
        api.post("/v1/campaigns/pricedrop/trigger", drop("u002", send_at=later))
    Releaser(engine).release_due()
    assert purge_api_data(engine).idempotency_keys == 0
    summary = purge_api_data(engine, utcnow() + timedelta(days=3))
    # The answer is past its hour, the sent trigger past its two days; the one still
    # waiting for its time stays, whatever its age.
    assert (summary.idempotency_keys, summary.triggers) == (1, 1)
    with Session(engine.db) as session:
        assert [t.recipient_id for t in session.exec(select(TriggerRow)).all()] == ["u002"]
