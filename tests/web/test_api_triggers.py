"""Triggered alerts over the HTTP API, on SQLite and PostgreSQL: trigger -> decision ->
message -> click -> reward -> learning; batches, dry runs, scheduling, cancelling,
eligibility at release, caps, idempotency, keys and hostile data."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
from kit.project import Project
from kit.triggers import add_triggered_campaign, drop, serve_api
from sqlmodel import Session, col, select

import engine.feedback.reward_job as reward_job
from engine.api_keys import create_key, revoke_key
from engine.app import Engine
from engine.feedback.rewards import join_closed_windows
from engine.models import LedgerRow, ModelVersionRow, RewardRow, SuppressionRow, utcnow
from engine.sending.release import Releaser
from engine.sending.triggers import trigger_run_id


def _engine(project: Project, **overrides: Any) -> Engine:
    add_triggered_campaign(project)
    engine = project.engine(**overrides)
    project.seed(engine, people=8)
    return engine


def _wait_status(api: Any, trigger_id: str, wanted: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = api.get(f"/v1/triggers/{trigger_id}").json()
        if answer["status"] == wanted or time.monotonic() > deadline:
            assert answer["status"] == wanted, answer
            return dict(answer)
        time.sleep(0.05)


def _rows(engine: Engine) -> list[LedgerRow]:
    with Session(engine.db) as session:
        return list(session.exec(select(LedgerRow).order_by(col(LedgerRow.id))).all())


def test_a_trigger_is_decided_sent_clicked_rewarded_and_learned_from(project: Project) -> None:
    engine = _engine(project)
    with project.sent_through_a_server(people=1) as (_, tracking):
        engine = project.engine(tracking_base_url=tracking)
        with serve_api(engine) as api:
            answer = api.post("/v1/campaigns/pricedrop/trigger", drop("u001")).json()
            assert answer["status"] == "queued" and answer["variant"] in ("short", "long")
            assert 0 < answer["probability"] <= 1 and answer["trigger_id"].startswith("trg_")
            sent = _wait_status(api, answer["trigger_id"], "sent")
        message = engine.memory_outbox[-1]  # type: ignore[attr-defined]
        assert "Lamp" in message.subject and message.to_address == "user1@example.com"
        links = re.findall(r'href="([^"]+/c/[^"]+)"', message.html)
        assert links and all(link.startswith(tracking) for link in links)
        browser = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"}
        click = httpx.get(links[0], headers=browser, follow_redirects=False, trust_env=False)
        assert click.status_code in (302, 303, 307) and click.headers["location"].startswith(
            "https://shop.example.com/"
        )
    row = next(r for r in _rows(engine) if r.trigger_id == answer["trigger_id"])
    assert row.run_id == trigger_run_id("pricedrop", utcnow()) and row.status == "sent"
    assert row.decision_id == answer["decision_id"] and row.context["event_kind"] == "drop"
    assert sent["sent_at"] is not None
    join_closed_windows(engine, ["pricedrop"], utcnow() + timedelta(hours=2))
    with Session(engine.db) as session:
        reward = session.get(RewardRow, row.id)
    assert reward is not None and reward.reward == 1.0
    versions = reward_job.learn_from_rewards(engine, ["pricedrop"])
    assert "pricedrop" in versions
    with Session(engine.db) as session:
        assert session.exec(select(ModelVersionRow)).first() is not None


def test_a_batch_is_all_or_nothing_and_a_dry_run_writes_nothing(project: Project) -> None:
    engine = _engine(project)
    with serve_api(engine, release=False) as api:
        body = {"triggers": [drop(f"u00{i}") for i in range(5)]}
        answer = api.post("/v1/campaigns/pricedrop/triggers", body)
        assert answer.status_code == 202
        assert [t["recipient_id"] for t in answer.json()["triggers"]] == [
            f"u00{i}" for i in range(5)
        ]
        bad = {"triggers": [drop("u001"), drop("u002", items=["no-such-item"])]}
        refused = api.post("/v1/campaigns/pricedrop/triggers", bad)
        assert refused.status_code == 422
        assert refused.json()["error"] == {
            "code": "unknown_item",
            "message": "item 'no-such-item' is not in the catalogue",
            "index": 1,
        }
        before = len(_rows(engine))
        dry = api.post("/v1/campaigns/pricedrop/trigger", drop("u003") | {"dry_run": True})
        assert dry.status_code == 200 and dry.json()["status"] == "dry_run"
        assert "Lamp" in dry.json()["message"]["subject"]
        assert len(_rows(engine)) == before == 5


def test_a_new_recipient_needs_an_email_and_bad_input_names_the_problem(project: Project) -> None:
    engine = _engine(project)
    with serve_api(engine, release=False) as api:
        unknown = api.post("/v1/campaigns/pricedrop/trigger", drop("nobody"))
        assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_recipient"
        new = drop("nobody") | {"recipient": {"id": "nobody", "email": "No@Example.com"}}
        assert api.post("/v1/campaigns/pricedrop/trigger", new).status_code == 202
        assert _rows(engine)[-1].email == "no@example.com"
        missing = drop("u001") | {"data": {"title": "Lamp"}}  # no price: templates need it
        refused = api.post("/v1/campaigns/pricedrop/trigger", missing)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "template_data"
        assert "price" in refused.json()["error"]["message"]
        wrong = api.post("/v1/campaigns/alerts/trigger", drop("u001"))
        assert wrong.status_code == 409 and wrong.json()["error"]["code"] == "not_triggered"
        typo = api.post("/v1/campaigns/pricedrp/trigger", drop("u001"))
        assert typo.status_code == 404 and typo.json()["error"]["code"] == "unknown_campaign"
        empty = api.post("/v1/campaigns/pricedrp/trigger", {})  # the name is wrong first
        assert empty.status_code == 404 and "pricedrp" in empty.json()["error"]["message"]
        not_json = api.client.post(
            "/v1/campaigns/pricedrop/trigger", content=b"{oops", headers=api.headers()
        )
        assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"
        naive = api.post(
            "/v1/campaigns/pricedrop/trigger", drop("u001", send_at="2026-01-01T09:00")
        )
        assert naive.status_code == 422 and "send_at" in naive.json()["error"]["message"]


def test_a_scheduled_trigger_is_released_once_across_releasers_and_another_is_cancelled(
    project: Project,
) -> None:
    engine = _engine(project)
    due = utcnow() + timedelta(minutes=30)
    soon = due.isoformat()
    later = (utcnow() + timedelta(hours=1)).isoformat()
    with serve_api(engine, release=False) as api:
        first = api.post("/v1/campaigns/pricedrop/trigger", drop("u001", send_at=soon)).json()
        second = api.post("/v1/campaigns/pricedrop/trigger", drop("u002", send_at=later)).json()
        assert first["status"] == second["status"] == "scheduled"
        cancelled = api.post(f"/v1/triggers/{second['trigger_id']}/cancel", {})
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "skipped"
        assert cancelled.json()["reason"] == "cancelled by the API"
        # The leader releases nothing early; then it stops (a restart), and once the time
        # has come a new leader and a second process release at once: the row goes once.
        old = Releaser(project.engine())
        assert old.release_due().released == 0
        old.close()
        releasers = [Releaser(project.engine()) for _ in range(3)]
        at = due + timedelta(seconds=1)
        with ThreadPoolExecutor(3) as pool:
            summaries = list(pool.map(lambda r: r.release_due(at), releasers))
        for releaser in releasers:
            releaser.close()
        assert sum(s.sent for s in summaries) == 1
        assert sum(s.released for s in summaries) == 1
        assert api.get(f"/v1/triggers/{first['trigger_id']}").json()["status"] == "sent"
        again = api.post(f"/v1/triggers/{first['trigger_id']}/cancel", {})
        assert again.status_code == 409 and again.json()["error"]["code"] == "not_cancellable"
    statuses = sorted(r.status for r in _rows(engine))
    assert statuses == ["sent", "skipped"]


def test_a_suppression_made_after_the_trigger_is_applied_at_release(project: Project) -> None:
    engine = _engine(project)
    with serve_api(engine, release=False) as api:
        answer = api.post("/v1/campaigns/pricedrop/trigger", drop("u001")).json()
        with Session(engine.db) as session:
            session.add(SuppressionRow(email="user1@example.com", reason="unsubscribe"))
            session.commit()
        summary = Releaser(engine).release_due()
        assert summary.skipped == 1 and summary.sent == 0
        read = api.get(f"/v1/triggers/{answer['trigger_id']}").json()
        assert read["status"] == "skipped" and read["reason"] == "suppressed (unsubscribe)"
    assert not getattr(engine, "memory_outbox", [])


def test_frequency_caps_count_scheduled_and_triggered_sends_together(project: Project) -> None:
    from engine.sending.real_run import run_campaign  # lazy: only this test sends a run

    engine = _engine(project, frequency_cap="1d")
    with serve_api(engine) as api:
        first = api.post("/v1/campaigns/pricedrop/trigger", drop("u001")).json()
        _wait_status(api, first["trigger_id"], "sent")
        run_campaign(engine, "alerts", run_id="r1")  # the scheduled run skips u001
        capped = api.post("/v1/campaigns/pricedrop/trigger", drop("u002")).json()
    assert capped["status"] == "skipped" and "frequency cap" in capped["reason"]
    scheduled = {r.recipient_id: r for r in _rows(engine) if r.run_id == "r1"}
    assert scheduled["u001"].status == "skipped"
    assert "frequency cap" in (scheduled["u001"].skip_reason or "")
    assert scheduled["u002"].status == "sent"


def test_replaying_every_request_with_its_key_sends_each_once(project: Project) -> None:
    engine = _engine(project, api={"rate_limit_per_second": 10_000})
    with serve_api(engine) as api:
        bodies = [
            drop(f"u00{i % 8}", data={"kind": "d", "title": f"T{i}", "price": "1", "url": "x"})
            for i in range(100)
        ]
        for replay in range(10):
            for i, body in enumerate(bodies):
                answer = api.post(
                    "/v1/campaigns/pricedrop/trigger", body, **{"Idempotency-Key": f"k-{i}"}
                )
                assert answer.status_code == 202, answer.text
                if replay:
                    assert answer.headers.get("Idempotent-Replayed") == "true"
        other = api.post(
            "/v1/campaigns/pricedrop/trigger", drop("u001"), **{"Idempotency-Key": "k-0"}
        )
        assert other.status_code == 422
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        deadline = time.monotonic() + 30
        while sum(r.status == "sent" for r in _rows(engine)) < 100 and time.monotonic() < deadline:
            time.sleep(0.1)
    assert len(_rows(engine)) == 100
    assert len(engine.memory_outbox) == 100  # type: ignore[attr-defined]


def test_an_event_id_makes_a_repeat_the_same_trigger(project: Project) -> None:
    engine = _engine(project)
    with serve_api(engine, release=False) as api:
        first = api.post("/v1/campaigns/pricedrop/trigger", drop("u001", event_id="ev-1")).json()
        again = api.post("/v1/campaigns/pricedrop/trigger", drop("u001", event_id="ev-1")).json()
        assert again == first
        changed = drop("u002", event_id="ev-1")
        refused = api.post("/v1/campaigns/pricedrop/trigger", changed)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "event_id_reused"
    assert len(_rows(engine)) == 1


def test_keys_scopes_and_rates_are_enforced(project: Project) -> None:
    engine = _engine(project, api={"rate_limit_per_second": 1, "rate_limit_burst": 3})
    _, reader = create_key(engine.db, "reader", ["read"])
    other, elsewhere = create_key(engine.db, "other", ["trigger", "read"], ["alerts"])
    with serve_api(engine, release=False) as api:
        url = "/v1/campaigns/pricedrop/trigger"
        none = api.client.post(url, json=drop("u001"))
        assert none.status_code == 401 and none.json()["error"]["code"] == "unauthorized"
        forged = api.client.post(
            url, json=drop("u001"), headers=api.headers("tm_0123456789ab_" + "x" * 43)
        )
        assert forged.status_code == 401
        read_only = api.client.post(url, json=drop("u001"), headers=api.headers(reader))
        assert read_only.status_code == 403 and read_only.json()["error"]["code"] == "forbidden"
        wrong_campaign = api.client.post(url, json=drop("u001"), headers=api.headers(elsewhere))
        assert wrong_campaign.status_code == 403
        answer = api.post(url, drop("u001")).json()
        hidden = api.client.get(
            f"/v1/triggers/{answer['trigger_id']}", headers=api.headers(elsewhere)
        )
        assert hidden.status_code == 404
        codes = [api.post(url, drop("u002")).status_code for _ in range(4)]
        assert 429 in codes
        limited = next(r for r in (api.post(url, drop("u002")),) if r.status_code == 429)
        assert limited.headers["Retry-After"] == "1"
        assert limited.json()["error"]["code"] == "rate_limited"
        revoke_key(engine.db, other.id)
        time.sleep(1.1)  # [api] key_cache_seconds: a verified key is trusted for a second
        gone = api.client.get(
            f"/v1/triggers/{answer['trigger_id']}", headers=api.headers(elsewhere)
        )
        assert gone.status_code == 401


def test_a_hostile_url_in_event_data_never_becomes_a_tracked_redirect(project: Project) -> None:
    engine = _engine(project)
    hostile = [
        "https://evil.example/phish",
        "https://shop.example.com\\@evil.example/",
        "https://shop.example.com.evil.example/",
        "javascript:alert(1)",
        'https://evil.example/"><a href="https://evil.example/x',
    ]
    with serve_api(engine) as api:
        for url in hostile:
            body = drop(
                "u001", data={"kind": "d", "title": "<b>Lamp</b>", "price": "1", "url": url}
            )
            answer = api.post("/v1/campaigns/pricedrop/trigger", body).json()
            _wait_status(api, answer["trigger_id"], "sent")
    messages = engine.memory_outbox  # type: ignore[attr-defined]
    assert len(messages) == len(hostile)
    for message in messages:
        assert "<b>Lamp</b>" not in message.html  # escaped: data is text
        for target in message.metadata["links"]:
            assert target.startswith("https://shop.example.com/"), target
