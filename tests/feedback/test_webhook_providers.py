"""Each provider webhook against requests signed the provider's way with keys made here.

Matrix per provider: valid, bad signature, missing signature header, stale signed
timestamp, one body byte changed. Plus the framework rules of issue 5 item 17: unreadable
payloads answer 400 (never 500), and events without a provider id dedupe on content.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kit.ledger import add_send
from kit.providers import (
    MailgunSigner,
    PostmarkSigner,
    SendGridSigner,
    Signer,
    SNSSigner,
    StandardSigner,
    now,
    signed_request,
)
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from engine.app import Engine
from engine.db import session_scope
from engine.errors import ConfigError
from engine.models import EventRow, SuppressionRow
from engine.settings import load_settings
from engine.web import BackgroundServer
from plugins.webhooks.ses import REFUSED, SESWebhook

CAMPAIGN = """
name = "alerts"
[recipe]
name = "popularity"
[policy]
name = "uniform"
[[variants]]
key = "a"
subject = "Hi"
template = "a.html"
"""


class Kit:
    """Every signer, and an engine serving all five webhooks configured for them."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.signers: dict[str, Signer] = {
            "sendgrid": SendGridSigner(),
            "mailgun": MailgunSigner(),
            "postmark": PostmarkSigner(),
            "ses": SNSSigner(version="2"),
            "ses-v1": SNSSigner(version="1"),
            "standard": StandardSigner(),
        }
        mailgun, postmark, standard = (self.signers[k] for k in ("mailgun", "postmark", "standard"))
        assert isinstance(mailgun, MailgunSigner) and isinstance(postmark, PostmarkSigner)
        assert isinstance(standard, StandardSigner)
        monkeypatch.setenv("TEST_MAILGUN_SIGNING_KEY", mailgun.key)
        monkeypatch.setenv("TEST_POSTMARK_PASSWORD", postmark.password)
        monkeypatch.setenv("TEST_STANDARD_SECRET", standard.secret)
        (root / "config" / "campaigns").mkdir(parents=True)
        (root / "config" / "campaigns" / "alerts.toml").write_text(CAMPAIGN)
        (root / "templates").mkdir()
        (root / "templates" / "a.html").write_text("<p>hi</p>")
        webhooks = {
            name: signer.options() for name, signer in self.signers.items() if name != "ses-v1"
        }
        settings = load_settings(
            project_dir=root,
            environ={"TAILORMAIL_SECRET": "s" * 32},
            overrides={
                "database_url": f"sqlite:///{root}/t.db",
                "delivery": {"backend": "memory"},
                "plugins": {"webhooks": webhooks},
            },
        )
        self.engine = Engine(settings=settings, load_entry_points=False)
        ses = self.engine.webhook_handlers.get("ses")
        assert isinstance(ses, SESWebhook)
        sns = self.signers["ses"]
        assert isinstance(sns, SNSSigner)
        ses.client = sns.client()
        # Both SNS signers share one certificate URL: version 1 signs with the same key.
        v1 = self.signers["ses-v1"]
        assert isinstance(v1, SNSSigner)
        v1.key, v1.cert = sns.key, sns.cert

    def add_send(self) -> tuple[int, str]:
        email = f"{uuid.uuid4().hex[:10]}@example.com"
        return add_send(self.engine, email, links=[]), email

    def events(self, send_id: int) -> list[EventRow]:
        with session_scope(self.engine.db) as session:
            stmt = select(EventRow).where(EventRow.send_id == send_id)  # type: ignore[arg-type]
            return list(session.scalars(stmt))

    def suppressed(self, email: str) -> str | None:
        with session_scope(self.engine.db) as session:
            row = session.get(SuppressionRow, email)
            return row.reason if row else None


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kit]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        built = Kit(tmp_path_factory.mktemp("webhooks"), monkeypatch)
        yield built
        built.engine.close()


@pytest.fixture(scope="module")
def client(kit: Kit) -> Iterator[httpx.Client]:
    with (
        BackgroundServer(kit.engine) as server,
        httpx.Client(base_url=server.url, trust_env=False, timeout=10) as http,
    ):
        yield http


PROVIDERS = ["sendgrid", "mailgun", "postmark", "ses", "ses-v1", "standard"]


def post(client: httpx.Client, name: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    provider = "ses" if name.startswith("ses") else name
    return client.post(f"/webhooks/{provider}", content=body, headers=headers)


def change_byte(body: bytes, needle: bytes) -> bytes:
    """``body`` with the first byte of ``needle`` changed (the JSON stays valid)."""
    at = body.index(needle)
    changed = b"X" if body[at : at + 1] != b"X" else b"Y"
    return body[:at] + changed + body[at + 1 :]


@pytest.mark.parametrize("name", PROVIDERS)
def test_valid_request_stores_the_event_once_and_suppresses(
    kit: Kit, client: httpx.Client, name: str
) -> None:
    send_id, email = kit.add_send()
    headers, body = signed_request(kit.signers[name], "bounce", send_id, email)
    response = post(client, name, headers, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"stored": 1, "duplicates": 0}
    [event] = kit.events(send_id)
    assert (event.type, event.data.get("bounce_type")) == ("bounce", "hard")
    assert kit.suppressed(email) == "hard_bounce"
    again = post(client, name, headers, body)  # the provider's retry
    assert again.json() == {"stored": 0, "duplicates": 1}
    assert len(kit.events(send_id)) == 1


@pytest.mark.parametrize("name", PROVIDERS)
def test_bad_signature_is_403(kit: Kit, client: httpx.Client, name: str) -> None:
    send_id, email = kit.add_send()
    signer = kit.signers[name]
    headers, body = signed_request(signer, "complaint", send_id, email)
    if isinstance(signer, MailgunSigner):
        envelope = json.loads(body)
        envelope["signature"]["signature"] = "0" * 64
        body = json.dumps(envelope).encode()
    elif isinstance(signer, SNSSigner):
        envelope = json.loads(body)
        envelope["Signature"] = json.loads(signed_request(signer, "delivered", 1, email)[1])[
            "Signature"
        ]
        body = json.dumps(envelope).encode()
    elif isinstance(signer, PostmarkSigner):
        headers["Authorization"] = "Basic aG9va3M6d3Jvbmc="  # hooks:wrong
    else:  # sign another body and keep this one
        headers = headers | signer.sign(body + b" ")
    response = post(client, name, headers, body)
    assert response.status_code == 403, response.text
    assert kit.events(send_id) == [] and kit.suppressed(email) is None


@pytest.mark.parametrize("name", PROVIDERS)
def test_missing_signature_is_403(kit: Kit, client: httpx.Client, name: str) -> None:
    send_id, email = kit.add_send()
    signer = kit.signers[name]
    headers, body = signed_request(signer, "complaint", send_id, email)
    if isinstance(signer, MailgunSigner | SNSSigner):  # the signature is in the body
        envelope = json.loads(body)
        envelope.pop("signature" if isinstance(signer, MailgunSigner) else "Signature")
        body = json.dumps(envelope).encode()
    else:
        headers.pop(signer.signature_header)
    response = post(client, name, headers, body)
    assert response.status_code == 403, response.text
    # SES says one thing for every refusal (tests/feedback/test_ses_checks.py); the others name it.
    expected = REFUSED if isinstance(signer, SNSSigner) else "missing"
    assert expected in response.json()["error"]
    assert kit.events(send_id) == []


@pytest.mark.parametrize("name", [p for p in PROVIDERS if p != "postmark"])
def test_stale_signed_timestamp_is_400(kit: Kit, client: httpx.Client, name: str) -> None:
    send_id, email = kit.add_send()
    stale = now() - dt.timedelta(minutes=6)
    headers, body = signed_request(kit.signers[name], "complaint", send_id, email, at=stale)
    response = post(client, name, headers, body)
    assert response.status_code == 400, response.text
    assert "tolerance" in response.json()["error"]
    assert kit.events(send_id) == []


def test_postmark_signs_no_time_so_an_old_event_is_still_taken(
    kit: Kit, client: httpx.Client
) -> None:
    """Postmark has only basic auth: nothing is signed, so there is no tolerance to apply."""
    send_id, email = kit.add_send()
    old = now() - dt.timedelta(hours=5)  # a bounce Postmark retried for hours
    headers, body = signed_request(kit.signers["postmark"], "bounce", send_id, email, at=old)
    assert post(client, "postmark", headers, body).status_code == 200


@pytest.mark.parametrize("name", PROVIDERS)
def test_one_changed_body_byte_is_refused(kit: Kit, client: httpx.Client, name: str) -> None:
    send_id, email = kit.add_send()
    signer = kit.signers[name]
    headers, body = signed_request(signer, "complaint", send_id, email)
    if isinstance(signer, MailgunSigner):
        body = _mailgun_change_token(body)
    elif isinstance(signer, PostmarkSigner):
        # Postmark signs nothing in the body: a changed byte that breaks it is a 400.
        body = body.replace(b"{", b"[", 1)
    else:
        body = change_byte(body, email.encode())
    response = post(client, name, headers, body)
    expected = 400 if isinstance(signer, PostmarkSigner) else 403
    assert response.status_code == expected, response.text
    assert kit.events(send_id) == [] and kit.suppressed(email) is None


def _mailgun_change_token(body: bytes) -> bytes:
    envelope = json.loads(body)
    token = envelope["signature"]["token"]
    envelope["signature"]["token"] = ("1" if token[0] != "1" else "2") + token[1:]
    return json.dumps(envelope).encode()


def test_mailgun_token_is_single_use_for_another_body(kit: Kit, client: httpx.Client) -> None:
    """Mailgun signs timestamp and token only: a replayed token with forged events fails."""
    send_id, email = kit.add_send()
    headers, body = signed_request(kit.signers["mailgun"], "delivered", send_id, email)
    assert post(client, "mailgun", headers, body).status_code == 200
    forged = json.loads(body)
    forged["event-data"]["event"] = "complained"
    forged["event-data"]["id"] = "forged"
    response = post(client, "mailgun", headers, json.dumps(forged).encode())
    assert response.status_code == 403
    assert "token" in response.json()["error"]
    assert [e.type for e in kit.events(send_id)] == ["delivered"]
    assert kit.suppressed(email) is None


def test_sns_subscription_is_confirmed_for_an_allowed_topic_only(
    kit: Kit, client: httpx.Client
) -> None:
    signer = kit.signers["ses"]
    assert isinstance(signer, SNSSigner)
    url = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=abc"
    fields = {"Type": "SubscriptionConfirmation", "SubscribeURL": url, "Token": "abc"}
    body = signer.envelope(b"You have chosen to subscribe", **fields)
    response = post(client, "ses", {}, body)
    assert response.status_code == 200, response.text
    assert signer.confirmations == [url]

    other = SNSSigner(topic="arn:aws:sns:eu-west-1:999999999999:someone-else")
    other.key, other.cert = signer.key, signer.cert
    refused = post(client, "ses", {}, other.envelope(b"subscribe", **fields))
    assert refused.status_code == 403 and refused.json()["error"] == REFUSED
    assert signer.confirmations == [url]


def test_sns_certificate_must_come_from_an_sns_host(kit: Kit, client: httpx.Client) -> None:
    send_id, email = kit.add_send()
    signer = kit.signers["ses"]
    assert isinstance(signer, SNSSigner)
    evil = SNSSigner(cert_url="https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem")
    evil.key, evil.cert = signer.key, signer.cert
    body = evil.envelope(evil.payload("complaint", send_id, email, now()))
    response = post(client, "ses", {}, body)
    assert response.status_code == 403 and response.json()["error"] == REFUSED


@pytest.mark.parametrize(
    "payload",
    [
        b"[]",
        b"[1, 2]",
        b'{"event": "bounce"}',
        b'[{"event": "open", "timestamp": 1e400}]',
        b'[{"event": "open", "timestamp": 99999999999999999999}]',
        b'[{"event": "click", "timestamp": 1700000000, "url": ["a"]}]',
        b'[{"event": "open", "timestamp": "soon"}]',
        b"\xff\xfe",
    ],
)
def test_unreadable_sendgrid_payloads_are_400_never_500(
    kit: Kit, client: httpx.Client, payload: bytes
) -> None:
    signer = kit.signers["sendgrid"]
    headers = signer.sign(payload)
    response = post(client, "sendgrid", headers, payload)
    assert response.status_code in (200, 400), response.text
    if payload != b"[]":
        assert response.status_code == 400


@pytest.mark.parametrize(
    "payload",
    [
        b'{"RecordType": "Delivery"}',
        b'{"RecordType": "Bounce", "Type": "HardBounce", "BouncedAt": 5}',
        b'{"RecordType": "Click", "ReceivedAt": "2024-01-01T00:00:00Z", '
        b'"OriginalLink": {"href": 1}}',
        b'{"RecordType": "Bounce", "ID": [1], "Type": '
        b'"HardBounce", "BouncedAt": "2024-01-01T00:00:00Z"}',
        b"null",
        b"1e999999",
    ],
)
def test_unreadable_postmark_payloads_are_400(
    kit: Kit, client: httpx.Client, payload: bytes
) -> None:
    headers = kit.signers["postmark"].sign(payload)
    assert post(client, "postmark", headers, payload).status_code == 400


def test_postmark_deliveries_without_an_id_dedupe_on_their_content(
    kit: Kit, client: httpx.Client
) -> None:
    send_id, email = kit.add_send()
    signer = kit.signers["postmark"]
    headers, body = signed_request(signer, "delivered", send_id, email)
    assert post(client, "postmark", headers, body).json() == {"stored": 1, "duplicates": 0}
    # The same record re-sent with its keys in another order is the same content.
    reordered = json.dumps(dict(reversed(list(json.loads(body).items())))).encode()
    assert post(client, "postmark", headers, reordered).json() == {"stored": 0, "duplicates": 1}
    [event] = kit.events(send_id)
    assert event.dedupe_key is not None and event.dedupe_key.startswith("postmark:sha256:")


def test_sendgrid_retry_with_a_new_event_id_is_still_a_duplicate(
    kit: Kit, client: httpx.Client
) -> None:
    send_id, email = kit.add_send()
    signer = kit.signers["sendgrid"]
    _, body = signed_request(signer, "delivered", send_id, email)
    events: list[dict[str, Any]] = json.loads(body)
    assert post(client, "sendgrid", signer.sign(body), body).json()["stored"] == 1
    events[0]["sg_event_id"] = "a-new-id-on-retry"
    retry = json.dumps(events).encode()
    assert post(client, "sendgrid", signer.sign(retry), retry).json() == {
        "stored": 0,
        "duplicates": 1,
    }


def test_a_bad_webhook_option_fails_at_start_up_naming_it(tmp_path: Path) -> None:
    # A missing secret stops only what serves the webhook: tests/cli/test_feature_seams.py.
    (tmp_path / "config" / "campaigns").mkdir(parents=True)
    for table, words in (
        ({"sendgrid": {"public_key": "bm90IGEga2V5"}}, "plugins.webhooks.sendgrid"),
        ({"sendgrid": {"publik_key": "x"}}, "plugins.webhooks.sendgrid.publik_key"),
        ({"sparkpost": {}}, "plugins.webhooks.sparkpost"),
    ):
        settings = load_settings(
            project_dir=tmp_path,
            environ={"TAILORMAIL_SECRET": "s" * 32},
            overrides={
                "database_url": f"sqlite:///{tmp_path}/t.db",
                "plugins": {"webhooks": table},
            },
        )
        with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
            Engine(settings=settings, load_entry_points=False)


def test_an_unconfigured_provider_answers_404(tmp_path: Path) -> None:
    (tmp_path / "config" / "campaigns").mkdir(parents=True)
    settings = load_settings(
        project_dir=tmp_path,
        environ={"TAILORMAIL_SECRET": "s" * 32},
        overrides={"database_url": f"sqlite:///{tmp_path}/t.db"},
    )
    with (
        Engine(settings=settings, load_entry_points=False) as engine,
        BackgroundServer(engine) as server,
    ):
        response = httpx.post(f"{server.url}/webhooks/sendgrid", content=b"[]", trust_env=False)
    assert response.status_code == 404
    assert "not configured" in response.json()["error"]


def test_events_the_database_cannot_take_answer_503_and_the_retry_stores_them(
    kit: Kit, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    send_id, email = kit.add_send()
    headers, body = signed_request(kit.signers["standard"], "complaint", send_id, email)

    def database_down(*args: Any, **kwargs: Any) -> bool:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    with monkeypatch.context() as patched:
        patched.setattr("engine.feedback.webhooks.record_event", database_down)
        response = post(client, "standard", headers, body)
    assert response.status_code == 503
    assert kit.events(send_id) == []
    assert post(client, "standard", headers, body).json() == {"stored": 1, "duplicates": 0}
    assert kit.suppressed(email) == "complaint"
