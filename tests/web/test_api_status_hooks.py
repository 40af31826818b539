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
