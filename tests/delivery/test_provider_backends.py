"""The HTTP provider backends against httpx.MockTransport, with the requests as documented.

Each provider's request is checked field by field against its public API reference:
SES v2 SendEmail (SigV4, verified here by an independent implementation of the
algorithm), SendGrid v3 Mail Send, Postmark /email and /email/batch, Mailgun
messages.mime, and the generic JSON backend. Waits go through an injected sleep.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.policy
import hashlib
import hmac
import json
from collections.abc import Callable
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from kit.project import Project
from kit.provider_api import (
    ALL,
    KEYS,
    OPTIONS,
    PROVIDER_IDS,
    Provider,
    ok,
    provider_keys,  # noqa: F401  (autouse: sets the API keys)
)
from kit.providers import PostmarkSigner
from kit.smtp import make_message, parse
from sqlmodel import col, select

from engine import hookimpl
from engine.app import Engine
from engine.db import session_scope
from engine.errors import ConfigError
from engine.feedback.webhooks import receive_webhook
from engine.models import EventRow, LedgerRow, LedgerStatus, SuppressionRow
from engine.sending.real_run import run_campaign
from engine.settings import load_settings
from engine.types import SendResult, SendStatus
from plugins.delivery.http_json import HTTPJSONBackend
from plugins.delivery.httpapi import HTTPBackend
from plugins.delivery.mailgun import MailgunBackend
from plugins.delivery.postmark import PostmarkBackend
from plugins.delivery.sendgrid import SendGridBackend
from plugins.delivery.ses import SESBackend


def send_one(provider: Provider, factory: type[HTTPBackend], **extra: Any) -> SendResult:
    with provider.backend(factory, **(OPTIONS[factory] | extra)) as backend:
        (result,) = backend.send([make_message(7)])
    return result


# --- the requests, as each provider documents them -------------------------------------


def _sigv4_signature(request: httpx.Request, secret: str, region: str) -> str:
    """AWS Signature Version 4, written from AWS's documentation to check botocore's."""
    auth = request.headers["Authorization"]
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    amz_date = request.headers["X-Amz-Date"]
    canonical = "\n".join(
        [
            request.method,
            request.url.path,
            request.url.query.decode(),
            "".join(f"{name}:{request.headers[name].strip()}\n" for name in signed),
            ";".join(signed),
            hashlib.sha256(request.content).hexdigest(),
        ]
    )
    scope = f"{amz_date[:8]}/{region}/ses/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{secret}".encode()
    for part in (amz_date[:8], region, "ses", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_ses_sends_raw_mime_to_sendemail_signed_with_sigv4() -> None:
    provider = Provider(ok(SESBackend))
    result = send_one(provider, SESBackend, configuration_set="alerts")
    (request,) = provider.requests
    assert request.method == "POST"
    assert str(request.url) == "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails"
    assert request.headers["Content-Type"] == "application/json"
    body = json.loads(request.content)
    assert set(body) == {
        "FromEmailAddress",
        "Destination",
        "Content",
        "EmailTags",
        "ConfigurationSetName",
    }
    assert body["FromEmailAddress"] == "alerts@example.org"
    assert body["Destination"] == {"ToAddresses": ["ann@example.org"]}
    assert body["EmailTags"] == [{"Name": "tailormail_send_id", "Value": "7"}]
    assert body["ConfigurationSetName"] == "alerts"
    mime = parse(base64.b64decode(body["Content"]["Raw"]["Data"]))
    assert mime["Message-ID"] == "<7.run7@tailormail.example>"
    assert mime["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    auth = request.headers["Authorization"]
    date = request.headers["X-Amz-Date"]
    assert auth.startswith(
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{date[:8]}/eu-west-1/ses/aws4_request, "
    )
    assert "host" in auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    signature = auth.rsplit("Signature=", 1)[1]
    secret = KEYS["AWS_SECRET_ACCESS_KEY"]
    assert signature == _sigv4_signature(request, secret, "eu-west-1")
    # One byte of the body changed no longer matches the signature.
    tampered = httpx.Request(
        "POST", request.url, headers=request.headers, content=request.content.replace(b"7", b"8")
    )
    assert signature != _sigv4_signature(tampered, secret, "eu-west-1")
    assert result == SendResult(7, SendStatus.SENT, provider_id="0100018c-ses-id")


def test_ses_session_token_is_sent_and_signed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token")
    provider = Provider(ok(SESBackend))
    send_one(provider, SESBackend, session_token_env="AWS_SESSION_TOKEN")
    (request,) = provider.requests
    assert request.headers["X-Amz-Security-Token"] == "session-token"
    assert "x-amz-security-token" in request.headers["Authorization"]


def test_sendgrid_posts_v3_mail_send_with_bearer_key_and_custom_args() -> None:
    provider = Provider(ok(SendGridBackend))
    result = send_one(provider, SendGridBackend)
    (request,) = provider.requests
    assert request.method == "POST"
    assert str(request.url) == "https://api.sendgrid.com/v3/mail/send"
    assert request.headers["Authorization"] == "Bearer SG.test-key"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "personalizations": [
            {"to": [{"email": "ann@example.org"}], "custom_args": {"tailormail_send_id": "7"}}
        ],
        "from": {"email": "alerts@example.org", "name": "Alerts"},
        "subject": "Zoë, 3 new listings for you",
        "content": [
            {"type": "text/plain", "value": "Bonjour Zoë"},
            {"type": "text/html", "value": "<p>Bonjour <b>Zoë</b></p>"},
        ],
        "headers": make_message(7).headers,
    }
    assert result == SendResult(7, SendStatus.SENT, provider_id="sg-abc123")


def test_sendgrid_sandbox_mode_is_a_mail_setting() -> None:
    provider = Provider(ok(SendGridBackend))
    send_one(provider, SendGridBackend, sandbox_mode=True)
    body = json.loads(provider.requests[0].content)
    assert body["mail_settings"] == {"sandbox_mode": {"enable": True}}


def _postmark_message(send_id: int) -> dict[str, Any]:
    message = make_message(send_id)
    return {
        "From": "Alerts <alerts@example.org>",
        "To": "ann@example.org",
        "Subject": "Zoë, 3 new listings for you",
        "HtmlBody": "<p>Bonjour <b>Zoë</b></p>",
        "TextBody": "Bonjour Zoë",
        "MessageStream": "broadcast",
        "Metadata": {"tailormail_send_id": str(send_id)},
        "Headers": [{"Name": name, "Value": value} for name, value in message.headers.items()],
    }


def test_postmark_posts_one_message_to_email_with_the_server_token() -> None:
    provider = Provider(ok(PostmarkBackend))
    result = send_one(provider, PostmarkBackend, message_stream="broadcast")
    (request,) = provider.requests
    assert request.method == "POST"
    assert str(request.url) == "https://api.postmarkapp.com/email"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Postmark-Server-Token"] == "pm-token"
    assert json.loads(request.content) == _postmark_message(7)
    assert result == SendResult(7, SendStatus.SENT, provider_id="pm-uuid-1")


def test_postmark_batches_with_per_message_error_codes() -> None:
    batch = httpx.Response(
        200,
        json=[
            {"ErrorCode": 0, "Message": "OK", "MessageID": "pm-1", "To": "ann@example.org"},
            {"ErrorCode": 406, "Message": "You tried to send to an inactive recipient."},
            {"ErrorCode": 300, "Message": "Invalid 'To' address."},
        ],
    )
    provider = Provider(batch, ok(PostmarkBackend))
    backend = provider.backend(PostmarkBackend, batch_size=3, message_stream="broadcast")
    with backend:
        results = backend.send([make_message(i) for i in (1, 2, 3, 4)])
    first, second = provider.requests
    assert str(first.url) == "https://api.postmarkapp.com/email/batch"
    assert json.loads(first.content) == [_postmark_message(i) for i in (1, 2, 3)]
    assert str(second.url) == "https://api.postmarkapp.com/email"
    assert [r.status for r in results] == [
        SendStatus.SENT,
        SendStatus.PERMANENT_FAILURE,
        SendStatus.PERMANENT_FAILURE,
        SendStatus.SENT,
    ]
    assert results[0].provider_id == "pm-1"
    assert results[1].rejected and not results[2].rejected
    assert "406" in (results[1].error or "")


def test_postmark_422_names_the_error_code() -> None:
    answer = {"ErrorCode": 300, "Message": "Invalid 'To' address: 'ann@'."}
    result = send_one(Provider(httpx.Response(422, json=answer)), PostmarkBackend)
    assert result.status == SendStatus.PERMANENT_FAILURE
    assert result.error == "Postmark ErrorCode 300: Invalid 'To' address: 'ann@'."


def _form(request: httpx.Request) -> dict[str, Any]:
    """multipart/form-data fields by name (file parts as bytes, with their content type)."""
    boundary = request.headers["Content-Type"].split("boundary=")[1].encode()
    fields: dict[str, Any] = {}
    for chunk in request.content.split(b"--" + boundary)[1:-1]:
        head, _, value = chunk.strip(b"\r\n").partition(b"\r\n\r\n")
        headers = BytesParser(policy=email.policy.HTTP).parsebytes(head + b"\r\n\r\n")
        name = headers.get_param("name", header="content-disposition")
        if headers.get_filename():
            fields[str(name)] = (value, headers.get_content_type())
        else:
            fields[str(name)] = value.decode()
    return fields


def test_mailgun_posts_the_mime_to_messages_mime_with_basic_auth() -> None:
    provider = Provider(ok(MailgunBackend))
    result = send_one(provider, MailgunBackend, base_url="https://api.eu.mailgun.net")
    (request,) = provider.requests
    assert request.method == "POST"
    assert str(request.url) == "https://api.eu.mailgun.net/v3/mg.example.org/messages.mime"
    expected = base64.b64encode(b"api:key-mailgun").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    fields = _form(request)
    assert set(fields) == {"to", "v:tailormail_send_id", "message"}
    assert fields["to"] == "ann@example.org"
    assert fields["v:tailormail_send_id"] == "7"
    data, content_type = fields["message"]
    assert content_type == "message/rfc822"
    mime = parse(data)
    assert mime["Message-ID"] == "<7.run7@tailormail.example>"
    assert mime["To"] == "ann@example.org"
    assert result == SendResult(7, SendStatus.SENT, provider_id="<2026.1@mg.example.org>")


def test_http_json_posts_batches_with_token_headers_and_per_message_results() -> None:
    answer = {
        "results": [
            {"id": "r-1", "status": "sent"},
            {"id": None, "status": "failed", "error": "550 no such user", "rejected": True},
        ]
    }
    provider = Provider(httpx.Response(200, json=answer))
    backend = provider.backend(
        HTTPJSONBackend,
        url="https://relay.example.org/send",
        token_env="RELAY_TOKEN",
        headers={"X-Tenant": "acme"},
        batch_size=2,
    )
    with backend:
        first, second = backend.send([make_message(1), make_message(2, to="bob@example.org")])
    (request,) = provider.requests
    assert (request.method, str(request.url)) == ("POST", "https://relay.example.org/send")
    assert request.headers["Authorization"] == "Bearer relay-token"
    assert request.headers["X-Tenant"] == "acme"
    assert "Idempotency-Key" not in request.headers
    messages = json.loads(request.content)["messages"]
    assert messages[1] == {
        "send_id": "2",  # built without a keyed reference: its id, as text
        "message_id": "<2.run7@tailormail.example>",
        "from": "Alerts <alerts@example.org>",
        "to": "bob@example.org",
        "subject": "Zoë, 3 new listings for you",
        "html": "<p>Bonjour <b>Zoë</b></p>",
        "text": "Bonjour Zoë",
        "headers": make_message(2).headers,
        "metadata": {},
    }
    assert first == SendResult(1, SendStatus.SENT, provider_id="r-1")
    assert second.status == SendStatus.PERMANENT_FAILURE and second.rejected


def test_http_json_without_results_counts_every_message_sent() -> None:
    provider = Provider(httpx.Response(204))
    result = send_one(provider, HTTPJSONBackend)
    assert result == SendResult(7, SendStatus.SENT, provider_id="<7.run7@tailormail.example>")


# --- rate limits, timeouts and refusals --------------------------------------------------


@pytest.mark.parametrize("factory", ALL)
def test_429_with_retry_after_waits_that_long_then_sends(factory: type[HTTPBackend]) -> None:
    provider = Provider(httpx.Response(429, headers={"Retry-After": "7"}), ok(factory))
    result = send_one(provider, factory)
    assert provider.waits == [7.0]
    assert len(provider.requests) == 2
    assert result.status == SendStatus.SENT
    assert result.provider_id == PROVIDER_IDS[factory]


def test_retry_after_as_an_http_date_is_read_against_the_clock() -> None:
    now = dt.datetime(2026, 12, 2, 14, 0, 0, tzinfo=dt.UTC)
    later = "Wed, 02 Dec 2026 14:00:45 GMT"
    provider = Provider(httpx.Response(429, headers={"Retry-After": later}), ok(SendGridBackend))
    backend = SendGridBackend(
        None,
        transport=httpx.MockTransport(provider),
        sleep=provider.waits.append,
        clock=now.timestamp,
    )
    with backend:
        backend.send([make_message(1)])
    assert provider.waits == [45.0]


def test_sendgrid_rate_limit_headers_hold_the_next_request_until_the_reset() -> None:
    now = 1_800_000_000.0
    exhausted = httpx.Response(
        202,
        headers={
            "X-Message-Id": "sg-1",
            "X-RateLimit-Limit": "600",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(now) + 12),
        },
    )
    provider = Provider(exhausted, ok(SendGridBackend))
    backend = SendGridBackend(
        None,
        transport=httpx.MockTransport(provider),
        sleep=provider.waits.append,
        clock=lambda: now,
        concurrency=1,
    )
    with backend:
        results = backend.send([make_message(1), make_message(2)])
    assert provider.waits == [12.0]
    assert [r.status for r in results] == [SendStatus.SENT, SendStatus.SENT]


def test_429_asking_for_longer_than_max_wait_defers_without_waiting() -> None:
    provider = Provider(httpx.Response(429, headers={"Retry-After": "3600"}))
    result = send_one(provider, PostmarkBackend, max_wait=60)
    assert provider.waits == []
    assert result.status == SendStatus.TEMPORARY_FAILURE
    assert result.error is not None and result.error.startswith("429")


@pytest.mark.parametrize("factory", ALL)
def test_504_after_sending_is_unknown_and_not_resent(factory: type[HTTPBackend]) -> None:
    provider = Provider(httpx.Response(504, text="Gateway Timeout"))
    result = send_one(provider, factory)
    assert len(provider.requests) == 1
    assert result.status == SendStatus.UNKNOWN
    assert result.error == "504 Gateway Timeout: Gateway Timeout"


@pytest.mark.parametrize("factory", ALL)
def test_read_timeout_is_unknown_and_connect_error_temporary(factory: type[HTTPBackend]) -> None:
    timeout = Provider(httpx.ReadTimeout("read timed out"))
    assert send_one(timeout, factory).status == SendStatus.UNKNOWN
    assert len(timeout.requests) == 1
    refused = Provider(httpx.ConnectError("connection refused"))
    assert send_one(refused, factory).status == SendStatus.TEMPORARY_FAILURE


def test_idempotency_key_makes_a_504_safe_to_retry() -> None:
    provider = Provider(
        httpx.Response(504),
        httpx.ReadTimeout("read timed out"),
        httpx.Response(200, json={"results": [{"id": "relay-9", "status": "sent"}]}),
    )
    result = send_one(provider, HTTPJSONBackend, idempotency_header="Idempotency-Key")
    keys = {request.headers["Idempotency-Key"] for request in provider.requests}
    assert len(provider.requests) == 3 and len(keys) == 1
    assert keys.pop().startswith("tailormail-")
    assert provider.waits == [1.0, 2.0]  # exponential back-off between the retries
    assert result == SendResult(7, SendStatus.SENT, provider_id="relay-9")


def test_idempotent_retries_give_up_as_unknown() -> None:
    provider = Provider(httpx.Response(503))
    result = send_one(
        provider, HTTPJSONBackend, idempotency_header="Idempotency-Key", max_attempts=3
    )
    assert len(provider.requests) == 3
    assert result.status == SendStatus.UNKNOWN


@pytest.mark.parametrize("factory", ALL)
def test_4xx_is_permanent_for_the_message(factory: type[HTTPBackend]) -> None:
    provider = Provider(httpx.Response(400, json={"errors": [{"message": "bad"}]}))
    result = send_one(provider, factory)
    assert result.status == SendStatus.PERMANENT_FAILURE
    assert result.error is not None and result.error.startswith("400 Bad Request")


def test_refused_credentials_defer_the_messages() -> None:
    result = send_one(Provider(httpx.Response(401)), SendGridBackend)
    assert result.status == SendStatus.TEMPORARY_FAILURE
    assert result.error is not None and "delivery.sendgrid" in result.error


def test_ses_quota_errors_are_temporary() -> None:
    answer = httpx.Response(
        400,
        headers={"x-amzn-ErrorType": "LimitExceededException:http://internal.amazon.com/"},
        json={"message": "Daily message quota exceeded"},
    )
    assert send_one(Provider(answer), SESBackend).status == SendStatus.TEMPORARY_FAILURE


@pytest.mark.parametrize("factory", ALL)
def test_header_injection_fails_only_that_message(factory: type[HTTPBackend]) -> None:
    provider = Provider(ok(factory))
    bad = make_message(1, headers={"X-Evil": "a\r\nBcc: victim@example.org"})
    with provider.backend(factory, **OPTIONS[factory]) as backend:
        failed, sent = backend.send([bad, make_message(2)])
    assert failed.status == SendStatus.PERMANENT_FAILURE and "X-Evil" in (failed.error or "")
    assert sent.status == SendStatus.SENT
    assert len(provider.requests) == 1


def test_concurrent_requests_keep_the_results_in_order() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        send_id = json.loads(request.content)["personalizations"][0]["custom_args"]
        return httpx.Response(202, headers={"X-Message-Id": f"sg-{send_id['tailormail_send_id']}"})

    backend = SendGridBackend(None, transport=httpx.MockTransport(answer), concurrency=8)
    with backend:
        results = backend.send([make_message(i) for i in range(1, 41)])
    assert [r.provider_id for r in results] == [f"sg-{i}" for i in range(1, 41)]


# --- options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "options", "text"),
    [
        (SendGridBackend, {"api_key": "SG.x"}, "delivery.sendgrid: unknown option 'api_key'"),
        (MailgunBackend, {}, "delivery.mailgun.domain: Field required"),
        (PostmarkBackend, {"batch_size": 0}, "delivery.postmark.batch_size: Input should be"),
        (PostmarkBackend, {"batch_size": 501}, "delivery.postmark.batch_size: Input should be"),
        (SESBackend, {"timeout": "soon"}, "delivery.ses.timeout: Input should be a valid number"),
        (HTTPJSONBackend, {"url": "relay.example.org"}, "delivery.http_json.url: String should"),
        (HTTPJSONBackend, {}, "delivery.http_json.url: Field required"),
        (SendGridBackend, {"transport": "mock"}, "delivery.sendgrid: unknown option 'transport'"),
    ],
)
def test_bad_options_are_errors_naming_the_option(
    factory: type[HTTPBackend], options: dict[str, Any], text: str
) -> None:
    with pytest.raises(ConfigError) as info:
        factory(None, **options)
    assert str(info.value).startswith(text)


@pytest.mark.parametrize(
    ("factory", "variable", "option"),
    [
        (SendGridBackend, "SENDGRID_API_KEY", "api_key_env"),
        (PostmarkBackend, "POSTMARK_SERVER_TOKEN", "server_token_env"),
        (MailgunBackend, "MAILGUN_API_KEY", "api_key_env"),
        (SESBackend, "AWS_SECRET_ACCESS_KEY", "secret_access_key_env"),
    ],
)
def test_a_missing_key_variable_names_the_option(
    monkeypatch: pytest.MonkeyPatch, factory: type[HTTPBackend], variable: str, option: str
) -> None:
    monkeypatch.delenv(variable)
    with pytest.raises(ConfigError) as info:
        factory(None, **OPTIONS[factory])
    assert str(info.value) == (
        f"delivery.{factory.name}.{option}: environment variable {variable!r} is not set"
    )


@pytest.mark.parametrize("factory", ALL)
def test_secrets_never_show_in_repr(factory: type[HTTPBackend]) -> None:
    backend = factory(None, **OPTIONS[factory])
    shown = repr(vars(backend)) + repr(backend.options)
    for secret in KEYS.values():
        assert secret not in shown


# --- through the engine --------------------------------------------------------------------


def test_a_bad_backend_option_stops_the_engine_at_start_up(sqlite_project: Project) -> None:
    with pytest.raises(ConfigError) as info:
        sqlite_project.engine("postmark", delivery={"postmark": {"batch_size": "many"}})
    assert str(info.value).startswith("delivery.postmark.batch_size: Input should be")


# A provider reaches other machines: these tests' loopback links and test senders are
# allowed on purpose, as in a staging setup (docs/sending.md).
STAGING = {"allow_test_addresses": True}


class MockedPostmark:
    """Registers ``mocked_postmark``: the Postmark backend talking to a scripted provider."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    @hookimpl
    def register_backends(self, register: Callable[[str, Any], None]) -> None:
        register(
            "mocked_postmark",
            lambda engine, **options: PostmarkBackend(
                engine, transport=httpx.MockTransport(self.provider), **options
            ),
        )


@pytest.mark.parametrize("factory", ALL)
def test_every_provider_refuses_test_addresses_unless_staging(
    sqlite_project: Project, factory: type[HTTPBackend]
) -> None:
    """Issue 18: a provider reaches other machines, so a new project's loopback links and
    reserved sender stop start-up, naming both keys; the staging switch allows them."""
    delivery = {factory.name: OPTIONS[factory]}
    with pytest.raises(ConfigError) as info:
        sqlite_project.engine(factory.name, delivery=delivery)
    assert str(info.value).startswith(f"delivery.backend {factory.name!r} sends real mail")
    assert "tracking_base_url: 'http://127.0.0.1:8025'" in str(info.value)
    assert "from_address: 'alerts@tailormail.invalid'" in str(info.value)
    with sqlite_project.engine(factory.name, delivery=delivery | STAGING) as engine:
        assert engine.make_backend().reaches_other_machines()


def test_postmark_inactive_recipient_is_suppressed_as_a_hard_bounce(
    sqlite_project: Project,
) -> None:
    answers = [{"ErrorCode": 0, "MessageID": "pm-0"}, {"ErrorCode": 406, "Message": "Inactive"}]
    provider = Provider(httpx.Response(200, json=answers))
    engine = sqlite_project.engine(
        "mocked_postmark",
        plugins=[MockedPostmark(provider)],
        delivery={"mocked_postmark": {"batch_size": 2}} | STAGING,
    )
    sqlite_project.seed(engine, people=2)
    run_campaign(engine, "alerts", run_id="r1")
    with session_scope(engine.db) as session:
        rows = session.exec(select(LedgerRow).order_by(col(LedgerRow.id))).all()
        refused = next(row for row in rows if row.status == LedgerStatus.FAILED)
        suppression = session.get(SuppressionRow, refused.email)
    assert suppression is not None and suppression.reason == "hard_bounce"


def test_provider_message_ids_join_webhook_events_to_the_ledger(
    sqlite_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ids Postmark returns land in the ledger; its webhook event joins by that id alone."""
    provider = Provider(
        httpx.Response(200, json=[{"ErrorCode": 0, "MessageID": f"pm-{i}"} for i in range(3)])
    )

    hooks = PostmarkSigner()
    monkeypatch.setenv("TEST_POSTMARK_PASSWORD", hooks.password)
    settings = load_settings(
        project_dir=sqlite_project.root,
        environ={"TAILORMAIL_SECRET": "test-secret-0123456789-0123456789-01"},
        overrides={
            "database_url": sqlite_project.db_url,
            "delivery": {"backend": "mocked_postmark", "mocked_postmark": {"batch_size": 3}}
            | STAGING,
            "plugins": {"webhooks": {"postmark": hooks.options()}},
        },
    )
    engine = Engine(settings=settings, plugins=[MockedPostmark(provider)], load_entry_points=False)
    sqlite_project.seed(engine, people=3)
    run_campaign(engine, "alerts", run_id="r1")
    with session_scope(engine.db) as session:
        rows = session.exec(select(LedgerRow).order_by(col(LedgerRow.id))).all()
        sent = {row.provider_id: (row.id, row.status) for row in rows}
    assert sorted(sent) == ["pm-0", "pm-1", "pm-2"]
    assert {status for _, status in sent.values()} == {LedgerStatus.SENT}
    (request,) = provider.requests
    assert sorted(m["To"] for m in json.loads(request.content)) == [
        f"user{i}@example.com" for i in range(3)
    ]

    # A delivery event without our metadata: only Postmark's MessageID can join it.
    event = json.loads(hooks.payload("delivered", 0, "user1@example.com", dt.datetime.now(dt.UTC)))
    event["MessageID"] = "pm-1"
    del event["Metadata"]
    body = json.dumps(event).encode()
    assert receive_webhook(engine, "postmark", hooks.sign(body), body) == (1, 0)
    with session_scope(engine.db) as session:
        (stored,) = session.exec(select(EventRow)).all()
    assert stored.send_id == sent["pm-1"][0]


def test_a_bad_option_of_a_backend_not_in_use_also_stops_start_up(
    sqlite_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked without building it: its key variable need not be set yet."""
    monkeypatch.delenv("SENDGRID_API_KEY")
    engine = sqlite_project.engine("memory", delivery={"sendgrid": {"sandbox_mode": True}})
    assert engine.settings.delivery.backend == "memory"
    with pytest.raises(ConfigError) as info:
        sqlite_project.engine("memory", delivery={"sendgrid": {"api_kye_env": "X"}})
    assert str(info.value) == "delivery.sendgrid: unknown option 'api_kye_env'"


def test_ses_can_take_credentials_from_botocores_chain(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ConfigError, match=r"^delivery.ses.credentials: botocore found no"):
        SESBackend(None, credentials="aws")
    (tmp_path / "credentials").write_text(
        "[default]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n"
    )
    provider = Provider(ok(SESBackend))
    send_one(provider, SESBackend, credentials="aws")
    (request,) = provider.requests
    assert "Credential=AKIDPROFILE/" in request.headers["Authorization"]
    signature = request.headers["Authorization"].rsplit("Signature=", 1)[1]
    assert signature == _sigv4_signature(request, "profile-secret", "eu-west-1")


def test_a_504_leaves_the_batch_unknown_and_a_rerun_never_resends_it(
    sqlite_project: Project,
) -> None:
    provider = Provider(httpx.Response(504, text="Gateway Timeout"))
    engine = sqlite_project.engine(
        "mocked_postmark",
        plugins=[MockedPostmark(provider)],
        delivery={"mocked_postmark": {"batch_size": 3}} | STAGING,
    )
    sqlite_project.seed(engine, people=3)
    run_campaign(engine, "alerts", run_id="r1")
    run_campaign(engine, "alerts", run_id="r1")  # resuming the run
    with session_scope(engine.db) as session:
        rows = session.exec(select(LedgerRow)).all()
        assert {row.status for row in rows} == {LedgerStatus.UNKNOWN}
        assert {row.error for row in rows} == {"504 Gateway Timeout: Gateway Timeout"}
    assert len(provider.requests) == 1
