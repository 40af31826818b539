"""Webhook intake is idempotent: any number of retries, in any order, store one delivery.

Providers retry until they see a 2xx, sometimes with a new event id; each request here is
delivered 1 to 50 times, shuffled, and the events, rewards and suppressions must be
exactly those of delivering each request once (in the order each first arrived).
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kit.providers import PostmarkSigner, SendGridSigner, StandardSigner, signed_request
from sqlalchemy import select

from engine.app import Engine
from engine.db import session_scope
from engine.feedback.reward_job import join_rewards
from engine.feedback.webhooks import receive_webhook
from engine.models import EventRow, LedgerRow, LedgerStatus, RewardRow, SuppressionRow
from engine.settings import load_settings

CAMPAIGN = """
name = "alerts"
[recipe]
name = "popularity"
[policy]
name = "uniform"
[reward]
attribution_window = "1h"
[[variants]]
key = "a"
subject = "Hi"
template = "a.html"
"""
SENT_AT = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
SIGNERS = {"sendgrid": SendGridSigner(), "postmark": PostmarkSigner(), "standard": StandardSigner()}
# (provider, kind, send index): the requests a provider might make about three sends.
REQUESTS = [
    ("sendgrid", "delivered", 0),
    ("sendgrid", "bounce", 0),
    ("postmark", "delivered", 1),
    ("postmark", "complaint", 1),
    ("standard", "click", 2),
    ("standard", "open", 2),
    ("standard", "unsubscribe", 2),
    ("sendgrid", "complaint", 2),
]


def make_engine(root: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    postmark, standard = SIGNERS["postmark"], SIGNERS["standard"]
    assert isinstance(postmark, PostmarkSigner) and isinstance(standard, StandardSigner)
    monkeypatch.setenv("TEST_POSTMARK_PASSWORD", postmark.password)
    monkeypatch.setenv("TEST_STANDARD_SECRET", standard.secret)
    (root / "config" / "campaigns").mkdir(parents=True)
    (root / "config" / "campaigns" / "alerts.toml").write_text(CAMPAIGN)
    (root / "templates").mkdir()
    (root / "templates" / "a.html").write_text("<p>hi</p>")
    settings = load_settings(
        project_dir=root,
        environ={"TAILORMAIL_SECRET": "s" * 32},
        overrides={
            "database_url": f"sqlite:///{root}/t.db",
            "delivery": {"backend": "memory"},
            "plugins": {"webhooks": {n: s.options() for n, s in SIGNERS.items()}},
        },
    )
    engine = Engine(settings=settings, load_entry_points=False)
    with session_scope(engine.db) as session:
        for index in range(3):
            session.add(
                LedgerRow(
                    id=index + 1,
                    run_id="alerts@1",
                    campaign="alerts",
                    recipient_id=f"r{index}",
                    email=f"person{index}@example.com",
                    decision_id=uuid.uuid4().hex,
                    status=LedgerStatus.SENT,
                    variant="a",
                    probability=1.0,
                    context={},
                    sent_at=SENT_AT,
                )
            )
    return engine


def build_requests() -> list[tuple[str, dict[str, str], bytes]]:
    requests = []
    for offset, (provider, kind, index) in enumerate(REQUESTS):
        at = SENT_AT + dt.timedelta(minutes=5 + offset)  # inside the attribution window
        headers, body = signed_request(
            SIGNERS[provider], kind, index + 1, f"person{index}@example.com", at=at
        )
        # The provider signed just now; the event happened at ``at``.
        if provider != "postmark":
            headers, body = _resign(provider, headers, body)
        requests.append((provider, headers, body))
    return requests


def _resign(provider: str, headers: dict[str, str], body: bytes) -> tuple[dict[str, str], bytes]:
    signer = SIGNERS[provider]
    assert isinstance(signer, SendGridSigner | StandardSigner)
    return headers | signer.sign(body), body


def snapshot(engine: Engine) -> dict[str, Any]:
    with session_scope(engine.db) as session:
        events = sorted(
            (e.type, e.send_id, e.dedupe_key, e.timestamp.isoformat(), e.url, str(e.data))
            for e in session.scalars(select(EventRow))
        )
        rewards = sorted(
            (r.send_id, r.reward, tuple(r.event_types)) for r in session.scalars(select(RewardRow))
        )
        suppressions = sorted(
            (s.email, s.reason, s.send_id) for s in session.scalars(select(SuppressionRow))
        )
    return {"events": events, "rewards": rewards, "suppressions": suppressions}


def deliver_all(engine: Engine, sequence: list[tuple[str, dict[str, str], bytes]]) -> None:
    for provider, headers, body in sequence:
        receive_webhook(engine, provider, headers, body)
    join_rewards(engine, now=SENT_AT + dt.timedelta(days=1), learn=False)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    counts=st.lists(st.integers(1, 50), min_size=len(REQUESTS), max_size=len(REQUESTS)),
    order=st.randoms(use_true_random=False),
)
def test_any_number_of_shuffled_retries_store_what_one_delivery_stores(
    tmp_path_factory: pytest.TempPathFactory, counts: list[int], order: Any
) -> None:
    signed = build_requests()  # signed now: a request signed at collection time goes stale
    sequence = [request for request, n in zip(signed, counts, strict=True) for _ in range(n)]
    order.shuffle(sequence)
    first_seen = list({id(request): request for request in sequence}.values())
    with pytest.MonkeyPatch.context() as monkeypatch:
        retried = make_engine(tmp_path_factory.mktemp("retried"), monkeypatch)
        once = make_engine(tmp_path_factory.mktemp("once"), monkeypatch)
        try:
            deliver_all(retried, sequence)
            deliver_all(once, first_seen)
            got, expected = snapshot(retried), snapshot(once)
        finally:
            retried.close()
            once.close()
    assert got == expected
    assert len(expected["events"]) == len(REQUESTS)
    assert len(expected["rewards"]) == 3
    assert {email for email, _, _ in expected["suppressions"]} == {
        "person0@example.com",
        "person1@example.com",
        "person2@example.com",
    }
