"""SES (through SNS): every check that needs no fetch comes before the certificate fetch.

A stale or replayed notification, a topic off the allow-list, an unknown signature
version, a certificate URL off SNS's hosts or port, an undecodable signature: each is
refused without an outbound request, and every refusal answers the same 403 text (the
allow-list is no oracle). Fetched keys live in a bounded cache. The handler is driven
directly, its HTTP client a MockTransport that records what it fetched.
"""

from __future__ import annotations

import copy
import datetime as dt
import json

import httpx
import pytest
from kit.providers import SNSSigner, now

from engine.feedback.webhooks import StaleWebhookError, WebhookError, WebhookVerificationError
from plugins.webhooks.ses import CERTIFICATES_KEPT, REFUSED, SESOptions, SESWebhook


class Fetches:
    """A MockTransport answering every ``.pem`` URL with one certificate, and counting."""

    def __init__(self, signer: SNSSigner) -> None:
        self.signer = signer
        self.urls: list[str] = []

    def client(self) -> httpx.Client:
        def answer(request: httpx.Request) -> httpx.Response:
            self.urls.append(str(request.url))
            if request.url.path.endswith(".pem"):
                return httpx.Response(200, content=self.signer.cert)
            return httpx.Response(404)

        return httpx.Client(transport=httpx.MockTransport(answer))


@pytest.fixture
def signer() -> SNSSigner:
    return SNSSigner()


@pytest.fixture
def fetches(signer: SNSSigner) -> Fetches:
    return Fetches(signer)


@pytest.fixture
def handler(signer: SNSSigner, fetches: Fetches) -> SESWebhook:
    ses = SESWebhook(client=fetches.client())
    ses.configure(SESOptions(topic_arns=[signer.topic]))
    return ses


def notification(signer: SNSSigner, at: dt.datetime | None = None, **fields: str) -> bytes:
    """A correctly signed delivery notification, with ``fields`` changed after signing."""
    body = signer.envelope(signer.payload("delivery", 7, "ann@example.com", at or now()), at)
    envelope = json.loads(body) | fields
    return json.dumps(envelope).encode()


def like(signer: SNSSigner, **changes: str) -> SNSSigner:
    """A signer with ``changes`` (another topic, certificate URL...) and the same key
    (a copy: a new ``SNSSigner`` would generate an RSA key)."""
    other = copy.copy(signer)
    for name, value in changes.items():
        setattr(other, name, value)
    return other


def test_a_genuine_notification_fetches_its_certificate_once(
    signer: SNSSigner, fetches: Fetches, handler: SESWebhook
) -> None:
    for _ in range(3):
        [event] = handler.handle({}, notification(signer))
        assert event.send_id == 7
    assert fetches.urls == [signer.cert_url]


def test_a_stale_notification_costs_no_fetch(
    signer: SNSSigner, fetches: Fetches, handler: SESWebhook
) -> None:
    stale = notification(signer, at=now() - dt.timedelta(minutes=6))
    with pytest.raises(StaleWebhookError, match="tolerance"):
        handler.handle({}, stale)
    assert fetches.urls == []


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param({"topic": "arn:aws:sns:eu-west-1:999999999999:other"}, id="topic"),
        pytest.param({"version": "3"}, id="signature-version"),
        pytest.param({"cert_url": "https://sns.eu-west-1.amazonaws.com:8443/x.pem"}, id="port"),
        pytest.param({"cert_url": "http://sns.eu-west-1.amazonaws.com/x.pem"}, id="http"),
        pytest.param(
            {"cert_url": "https://sns.eu-west-1.amazonaws.com.evil.example/x.pem"}, id="host"
        ),
        pytest.param({"cert_url": "https://a@sns.eu-west-1.amazonaws.com/x.pem"}, id="userinfo"),
    ],
)
def test_what_needs_no_fetch_is_refused_before_fetching_with_one_text(
    signer: SNSSigner, fetches: Fetches, handler: SESWebhook, spoil: dict[str, str]
) -> None:
    if spoil.get("version") == "3":
        body = notification(signer, SignatureVersion="3")
    else:
        body = notification(like(signer, **spoil))
    with pytest.raises(WebhookVerificationError) as caught:
        handler.handle({}, body)
    assert str(caught.value) == REFUSED and caught.value.status == 403
    assert fetches.urls == []


def test_an_undecodable_signature_is_refused_before_fetching(
    signer: SNSSigner, fetches: Fetches, handler: SESWebhook
) -> None:
    with pytest.raises(WebhookVerificationError, match=REFUSED):
        handler.handle({}, notification(signer, Signature="not base64 at all!"))
    assert fetches.urls == []


def test_a_forged_signature_says_what_a_wrong_topic_says(
    signer: SNSSigner, handler: SESWebhook
) -> None:
    forged = notification(signer, Message=json.dumps({"eventType": "Complaint"}))
    answers: list[str] = []
    for body in (forged, notification(like(signer, topic="arn:aws:sns:us-east-1:1:x"))):
        with pytest.raises(WebhookError) as caught:
            handler.handle({}, body)
        answers.append(f"{caught.value.status} {caught.value}")
    assert answers == [f"403 {REFUSED}", f"403 {REFUSED}"]


def test_the_certificate_cache_is_bounded(
    signer: SNSSigner, fetches: Fetches, handler: SESWebhook
) -> None:
    urls = [
        f"https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-{n}.pem"
        for n in range(CERTIFICATES_KEPT * 3)
    ]
    for url in urls:
        handler.handle({}, notification(like(signer, cert_url=url)))
    assert len(handler._certificates) == CERTIFICATES_KEPT
    assert list(handler._certificates) == urls[-CERTIFICATES_KEPT:]  # the latest kept
    handler.handle({}, notification(like(signer, cert_url=urls[-1])))  # a hit: no fetch
    assert fetches.urls == urls
