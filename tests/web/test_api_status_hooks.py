"""Status webhooks of triggered alerts, end to end: the API sends, the subscriber hears
``trigger.sent`` then ``trigger.clicked``, signed per Standard Webhooks (checked with the
``standardwebhooks`` package, an independent implementation); a cancel is heard too."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import httpx
from kit.project import Project
from kit.triggers import HookReceiver, add_triggered_campaign, drop, serve_api
from standardwebhooks import Webhook

from engine.api_keys import create_key
from engine.feedback.outbound import OutboundPolicy
from engine.feedback.status_webhooks import add_subscription
from engine.models import utcnow

FAST = {"webhooks": {"allow_http": True, "dispatch_interval_seconds": 0.1}}


def test_a_subscriber_hears_sent_then_clicked_signed(project: Project) -> None:
    add_triggered_campaign(project)
    receiver = HookReceiver()
    try:
        with project.sent_through_a_server(people=2) as (_, tracking):
            engine = project.engine(tracking_base_url=tracking, api=FAST)
            policy = OutboundPolicy.from_settings(engine.settings.api.webhooks)
            _, secret = add_subscription(engine.db, receiver.url, allow_private=True, policy=policy)
            with serve_api(engine) as api:
                answer = api.post("/v1/campaigns/pricedrop/trigger", drop("u001")).json()
                sent = receiver.wait_for("trigger.sent")
                message = engine.memory_outbox[-1]  # type: ignore[attr-defined]
                link = re.findall(r'href="([^"]+/c/[^"]+)"', message.html)[0]
                browser = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"}
                httpx.get(link, headers=browser, follow_redirects=False, trust_env=False)
                clicked = receiver.wait_for("trigger.clicked")
                later = (utcnow() + timedelta(hours=1)).isoformat()
                waiting = api.post("/v1/campaigns/pricedrop/trigger", drop("u000", send_at=later))
                api.post(f"/v1/triggers/{waiting.json()['trigger_id']}/cancel", {})
                cancelled = receiver.wait_for("trigger.cancelled")
    finally:
        receiver.close()
    verifier = Webhook(secret)
    for hook in (sent, clicked, cancelled):
        payload = verifier.verify(hook.body, hook.headers)  # raises when the signature is off
        assert payload["data"]["campaign"] == "pricedrop"
    assert json.loads(sent.body)["data"]["trigger_id"] == answer["trigger_id"]
    assert json.loads(clicked.body)["data"]["url"].startswith("https://shop.example.com/")
    forged = dict(sent.headers) | {"webhook-signature": "v1,AAAA"}
    try:
        verifier.verify(sent.body, forged)
    except Exception as exc:  # the library's WebhookVerificationError
        assert "signature" in str(exc).lower()
    else:
        raise AssertionError("a forged signature verified")


def test_an_application_subscribes_over_the_api_and_hears_only_its_keys_triggers(
    project: Project,
) -> None:
    add_triggered_campaign(project)
    receiver, other_receiver = HookReceiver(), HookReceiver()
    try:
        strict = project.engine()
        project.seed(strict, people=4)
        with serve_api(strict, release=False) as api:
            for url in ("https://127.0.0.1/hook", "https://169.254.169.254/latest/meta-data"):
                refused = api.post("/v1/subscriptions", {"url": url})
                assert refused.status_code == 422, refused.text
                assert refused.json()["error"]["code"] == "invalid_subscription"
        engine = project.engine(api=FAST | {"webhooks": FAST["webhooks"] | {"allow_private": True}})
        with serve_api(engine) as api:
            _, other = create_key(engine.db, "other", ["trigger"])
            made = api.post("/v1/subscriptions", {"url": receiver.url, "events": ["sent"]})
            assert made.status_code == 201, made.text
            secret = made.json()["secret"]
            theirs = api.client.post(
                "/v1/subscriptions", json={"url": other_receiver.url}, headers=api.headers(other)
            )
            assert theirs.status_code == 201
            listed = api.get("/v1/subscriptions").json()["subscriptions"]
            assert [s["id"] for s in listed] == [made.json()["id"]]
            assert listed[0]["secret"] is None  # shown once, when made
            answer = api.post("/v1/campaigns/pricedrop/trigger", drop("u001")).json()
            hook = receiver.wait_for("trigger.sent")
            assert (
                Webhook(secret).verify(hook.body, hook.headers)["data"]["trigger_id"]
                == (answer["trigger_id"])
            )
            gone = api.client.delete(
                f"/v1/subscriptions/{made.json()['id']}", headers=api.headers()
            )
            assert gone.status_code == 204
            assert api.get("/v1/subscriptions").json()["subscriptions"] == []
            not_mine = api.client.delete(
                f"/v1/subscriptions/{theirs.json()['id']}", headers=api.headers()
            )
            assert not_mine.status_code == 404
    finally:
        receiver.close()
        other_receiver.close()
    assert other_receiver.received == []  # another key's subscription hears none of these
