"""``message_bytes``, the direct MIME writer of the null and memory backends, says what
``build_mime`` says: same headers, same decoded parts, same refusals."""

from __future__ import annotations

import email.policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from kit.project import Project

from engine.mime import build_mime, message_bytes, mime_bytes
from engine.sending.real_run import run_campaign
from engine.types import Message
from plugins.delivery.null import NullBackend

UNSUBSCRIBE = "<https://t.example.com/u/" + "A" * 150 + ">"


def make(**changes: Any) -> Message:
    fields: dict[str, Any] = {
        "send_id": 7,
        "message_id": "<d.7@example.com>",
        "from_address": "Alerts <alerts@example.com>",
        "to_address": "ann@example.com",
        "subject": "Your picks, Ann",
        "html": "<p>Hi = there, caf\u00e9 " + "x" * 200 + "</p>\n<p>trailing  \n</p>",
        "text": "Hi there caf\u00e9\r\nspace at the end \nA=B\n" + "word " * 60,
        "headers": {"List-Unsubscribe": UNSUBSCRIBE, "X-Tailormail-Send-Id": "7"},
    }
    return Message(**(fields | changes))


def parse(data: bytes) -> EmailMessage:
    parsed = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(parsed, EmailMessage)
    return parsed


def summary(parsed: EmailMessage) -> dict[str, Any]:
    headers = ("From", "To", "Subject", "Message-ID", "List-Unsubscribe", "X-Tailormail-Send-Id")
    parts = {}
    for subtype in ("plain", "html"):
        part = parsed.get_body(preferencelist=(subtype,))
        assert part is not None
        parts[subtype] = part.get_content().replace("\r\n", "\n")
    return {
        "type": parsed.get_content_type(),
        "headers": {name: str(parsed[name]).strip() for name in headers},
        "parts": parts,
        "defects": [type(d).__name__ for d in parsed.defects],
    }


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"subject": "Bonjour \u00c9lise"},  # RFC 2047: the build_mime path
        {"text": "", "html": ""},
        {"text": ".\n--\n=_tm_\n", "html": "<p>\tTab\t</p>\r\n"},
    ],
)
def test_message_bytes_says_what_build_mime_says(changes: dict[str, Any]) -> None:
    message = make(**changes)
    direct = parse(message_bytes(message))
    assert summary(direct) == summary(parse(mime_bytes(build_mime(message))))
    assert summary(direct)["defects"] == []


def test_message_bytes_lines_are_crlf_and_short() -> None:
    data = message_bytes(make())
    assert b"\n" not in data.replace(b"\r\n", b"")
    body = data.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76


@pytest.mark.parametrize(
    ("changes", "phrase"),
    [
        ({"subject": "Hi\r\nBcc: x@example.com"}, "line break"),
        ({"headers": {"To": "someone@example.com"}}, "must be set through the Message fields"),
    ],
)
def test_message_bytes_refuses_what_build_mime_refuses(
    changes: dict[str, Any], phrase: str
) -> None:
    with pytest.raises(ValueError, match=phrase):
        message_bytes(make(**changes))
    with pytest.raises(ValueError, match=phrase):
        build_mime(make(**changes))


def test_the_null_backend_serializes_and_drops(sqlite_project: Project) -> None:
    backend = NullBackend()
    good, bad = make(), make(send_id=8, subject="a\nb")
    results = backend.send([good, bad])
    assert [r.status.value for r in results] == ["sent", "permanent_failure"]
    assert results[0].provider_id == "<d.7@example.com>" and "line break" in str(results[1].error)
    assert backend.messages == 1 and backend.bytes == len(message_bytes(good))
    engine = sqlite_project.engine(backend="null")
    sqlite_project.seed(engine, people=5)
    assert run_campaign(engine, "alerts", run_id="r").sent == 5


def test_a_line_starting_with_from_arrives_as_written() -> None:
    # build_mime's generator writes ">From" (mbox quoting); quoted-printable needs none.
    parsed = parse(message_bytes(make(text="From here\nFrom there\n")))
    assert summary(parsed)["parts"]["plain"] == "From here\nFrom there\n"
