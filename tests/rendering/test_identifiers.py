"""Identifiers that leave in a message reveal nothing (issue 17): the Message-ID, the
``X-Tailormail-Send-Id`` header and the send id in provider metadata are a keyed reference
of the send, and provider events still join by it, after a rotation too, as do the
numeric send ids of mail sent before."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime

import pytest
from kit.project import Project
from kit.provider_api import ALL, OPTIONS, Provider, ok, provider_keys
from sqlmodel import select

from engine import EventType, TrackingEvent
from engine.app import Engine
from engine.db import session_scope
from engine.feedback.events import record_event
from engine.identifiers import SendRefs, is_send_ref
from engine.mime import message_bytes
from engine.models import LedgerRow, SuppressionRow
from engine.sending.real_run import run_campaign
from engine.settings import load_settings
from engine.types import Message
from plugins.delivery.httpapi import HTTPBackend
from plugins.webhooks.mailgun import MailgunWebhook

# Whatever a request calls the send (tailormail_send_id, send_id, X-Tailormail-Send-Id),
# as a key, a MIME header or a name/value pair: the value that follows.
SEND_ID_VALUE = re.compile(r"send[_-]id\W+(?:Value\W+)?([A-Za-z0-9]+)", re.IGNORECASE)


@pytest.fixture
def sent(sqlite_project: Project) -> tuple[Project, list[Message], dict[int, LedgerRow]]:
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=6)
    run_campaign(engine, "alerts", run_id="r1")
    with session_scope(engine.db) as session:
        rows = {row.id: row for row in session.scalars(select(LedgerRow)) if row.id is not None}
    return sqlite_project, list(engine.memory_outbox), rows  # type: ignore[attr-defined]


def test_message_ids_and_headers_carry_a_keyed_reference_not_the_send_or_decision_id(
    sent: tuple[Project, list[Message], dict[int, LedgerRow]],
) -> None:
    project, messages, rows = sent
    assert len(messages) == 6
    refs = set()
    for message in messages:
        row = rows[message.send_id]
        ref = message.send_ref
        assert is_send_ref(ref) and ref == row.send_ref  # stored, so events join by lookup
        assert message.message_id == row.message_id == f"<{ref}@tailormail.invalid>"
        assert message.headers["X-Tailormail-Send-Id"] == ref
        raw = message_bytes(message).decode("ascii", "replace")
        assert row.decision_id not in raw  # the sampling seed never leaves
        assert [v for v in SEND_ID_VALUE.findall(raw)] == [ref]
        refs.add(ref)
    assert len(refs) == 6
    other = SendRefs(b"another project's secret, 32 bytes long").ref(messages[0].send_id)
    assert other != messages[0].send_ref  # keyed: nobody without the secret can compute it


@pytest.mark.usefixtures(provider_keys.__name__)
@pytest.mark.parametrize("factory", ALL, ids=lambda f: f.__name__)
def test_provider_metadata_names_the_send_by_its_reference_only(
    sent: tuple[Project, list[Message], dict[int, LedgerRow]], factory: type[HTTPBackend]
) -> None:
    _, messages, rows = sent
    message = messages[0]
    provider = Provider(ok(factory))
    with provider.backend(factory, **OPTIONS[factory]) as backend:
        backend.send([message])
    (request,) = provider.requests
    content = request.content.decode("utf-8", "replace")
    if factory.__name__ == "SESBackend":  # tags as name/value pairs, the MIME in base64
        body = json.loads(content)
        tags = "".join(f"{t['Name']}: {t['Value']}\n" for t in body["EmailTags"])
        content = tags + base64.b64decode(body["Content"]["Raw"]["Data"]).decode()
    values = set(SEND_ID_VALUE.findall(content))
    assert values == {message.send_ref}, values
    assert rows[message.send_id].decision_id not in content


def test_provider_events_join_by_reference_after_a_rotation_and_by_old_numeric_ids(
    sent: tuple[Project, list[Message], dict[int, LedgerRow]],
) -> None:
    project, messages, rows = sent
    settings = load_settings(
        project_dir=project.root,
        environ={"TAILORMAIL_SECRET": "a-rotated-secret-0123456789-0123456789"},
        overrides={"database_url": project.db_url, "delivery": {"backend": "memory"}},
    )
    rotated = Engine(settings=settings, load_entry_points=False)  # same database, new secret
    first, second = messages[0], messages[1]
    body = {
        "event-data": {
            "event": "failed",
            "severity": "permanent",
            "id": "mg-event-1",
            "timestamp": datetime.now(UTC).timestamp(),
            "recipient": "someone-else@example.org",  # the join must not need it
            "user-variables": {"tailormail_send_id": first.send_ref},
        }
    }
    (event,) = MailgunWebhook().parse({}, json.dumps(body).encode())
    assert (event.send_id, event.send_ref) == (None, first.send_ref)
    assert record_event(rotated, event)
    old_style = TrackingEvent(
        type=EventType.COMPLAINT, send_id=second.send_id, timestamp=datetime.now(UTC)
    )  # mail sent before references: the provider echoes the numeric id
    assert record_event(rotated, old_style)
    with session_scope(rotated.db) as session:
        suppressed = set(session.scalars(select(SuppressionRow.email)))
    assert suppressed == {rows[first.send_id].email, rows[second.send_id].email}
