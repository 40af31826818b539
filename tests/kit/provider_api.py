"""A provider's HTTP API, scripted: ``Provider`` answers in turn and records each request,
``ok`` is each provider's documented success answer, ``OPTIONS`` what each backend needs,
and the autouse ``provider_keys`` fixture sets the API keys (import it to use it).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from plugins.delivery.http_json import HTTPJSONBackend
from plugins.delivery.httpapi import HTTPBackend
from plugins.delivery.mailgun import MailgunBackend
from plugins.delivery.postmark import PostmarkBackend
from plugins.delivery.sendgrid import SendGridBackend
from plugins.delivery.ses import SESBackend

KEYS = {
    "SENDGRID_API_KEY": "SG.test-key",
    "POSTMARK_SERVER_TOKEN": "pm-token",
    "MAILGUN_API_KEY": "key-mailgun",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "RELAY_TOKEN": "relay-token",
}


@pytest.fixture(autouse=True)
def provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)


class Provider:
    """A scripted provider: answers in turn (the last one repeats), records each request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.waits: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def backend(self, factory: type[HTTPBackend], **options: Any) -> HTTPBackend:
        return factory(
            None, transport=httpx.MockTransport(self), sleep=self.waits.append, **options
        )


def ok(factory: type[HTTPBackend]) -> httpx.Response:
    """The provider's documented success answer for one message."""
    if factory is SESBackend:
        return httpx.Response(200, json={"MessageId": "0100018c-ses-id"})
    if factory is SendGridBackend:
        return httpx.Response(202, headers={"X-Message-Id": "sg-abc123"})
    if factory is PostmarkBackend:
        answer = {"To": "ann@example.org", "SubmittedAt": "2026-12-02T14:00:00Z"}
        return httpx.Response(200, json=answer | {"MessageID": "pm-uuid-1", "ErrorCode": 0})
    if factory is MailgunBackend:
        return httpx.Response(200, json={"id": "<2026.1@mg.example.org>", "message": "Queued."})
    return httpx.Response(200, json={"results": [{"id": "relay-1", "status": "sent"}]})


OPTIONS: dict[type[HTTPBackend], dict[str, Any]] = {
    SESBackend: {"region": "eu-west-1"},
    SendGridBackend: {},
    PostmarkBackend: {},
    MailgunBackend: {"domain": "mg.example.org"},
    HTTPJSONBackend: {"url": "https://relay.example.org/send"},
}
PROVIDER_IDS = {
    SESBackend: "0100018c-ses-id",
    SendGridBackend: "sg-abc123",
    PostmarkBackend: "pm-uuid-1",
    MailgunBackend: "<2026.1@mg.example.org>",
    HTTPJSONBackend: "relay-1",
}
ALL = list(OPTIONS)
