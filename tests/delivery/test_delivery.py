"""The built-in delivery backends: MIME, options, outbox files, memory (SMTP: test_smtp.py)."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pluggy
import pytest
from kit.smtp import UNSUBSCRIBE, make_message, parse

from engine import hookspecs
from engine.errors import ConfigError
from engine.mime import build_mime
from engine.registry import Registry, collect
from engine.settings import Settings
from engine.types import SendStatus
from plugins.delivery import memory, outbox, smtp
from plugins.delivery.memory import MemoryBackend
from plugins.delivery.outbox import OutboxBackend
from plugins.delivery.smtp import SMTPBackend


def body(parsed: EmailMessage, subtype: str) -> str:
    part = parsed.get_body(preferencelist=(subtype,))
    assert part is not None and part.get_content_type() == f"text/{subtype}"
    content: str = part.get_content()
    return content


def unfolded(parsed: EmailMessage, name: str) -> str:
    # Long headers fold right after the colon; the stdlib parser keeps that fold's space.
    return str(parsed[name]).strip()


# --- MIME -------------------------------------------------------------------------------


def test_mime_is_multipart_alternative_with_list_unsubscribe() -> None:
    parsed = parse(build_mime(make_message()).as_bytes())
    assert parsed.get_content_type() == "multipart/alternative"
    assert body(parsed, "plain").strip() == "Bonjour Zoë"
    assert body(parsed, "html").strip() == "<p>Bonjour <b>Zoë</b></p>"
    assert parsed["Subject"] == "Zoë, 3 new listings for you"
    assert parsed["Message-ID"] == "<1.run7@tailormail.example>"
    assert parsed["Date"] is not None
    assert unfolded(parsed, "List-Unsubscribe") == UNSUBSCRIBE
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["X-Tailormail-Send-Id"] == "1"


def test_mime_keeps_a_bracketed_message_id() -> None:
    mime = build_mime(make_message(message_id="<x@y>"))
    assert mime["Message-ID"] == "<x@y>"


@pytest.mark.parametrize(
    ("changes", "header"),
    [
        ({"subject": "Hi\r\nBcc: victim@example.org"}, "Subject"),
        ({"to_address": "ann@example.org\nBcc: victim@example.org"}, "To"),
        ({"from_address": "a@example.org\r"}, "From"),
        ({"message_id": "x@y\nBcc: v@example.org"}, "Message-ID"),
        (
            {"headers": {"List-Unsubscribe": "<https://x>\r\nBcc: v@example.org"}},
            "List-Unsubscribe",
        ),
        ({"headers": {"X-Evil\r\nBcc": "v@example.org"}}, "X-Evil"),
    ],
)
def test_header_injection_is_refused_naming_the_header(
    changes: dict[str, Any], header: str
) -> None:
    with pytest.raises(ValueError, match=header):
        build_mime(make_message(**changes))


def test_extra_headers_cannot_override_the_message_fields() -> None:
    with pytest.raises(ValueError, match="'To'"):
        build_mime(make_message(headers={"To": "someone-else@example.org"}))


# --- registration and options -------------------------------------------------------------


def test_each_module_registers_its_backend() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for module in (outbox, smtp, memory):
        pm.register(module)
    pm.check_pending()
    backends: Registry[Any] = collect("backend", pm.hook.register_backends)
    assert backends.names() == ["memory", "outbox", "smtp"]
    assert backends.get("outbox") is OutboxBackend


@pytest.mark.parametrize(
    ("factory", "option", "text"),
    [
        (OutboxBackend, "pth", "delivery.outbox: unknown option 'pth'"),
        (SMTPBackend, "hots", "delivery.smtp: unknown option 'hots'"),
        (MemoryBackend, "fail", "delivery.memory: unknown option 'fail'"),
    ],
)
def test_unknown_option_is_named(factory: Any, option: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        factory(None, **{option: 1})
    assert str(info.value) == text


def test_smtp_password_env_must_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAILORMAIL_TEST_SMTP_PW", raising=False)
    with pytest.raises(ConfigError, match="TAILORMAIL_TEST_SMTP_PW"):
        SMTPBackend(None, username="u", password_env="TAILORMAIL_TEST_SMTP_PW")


def test_smtp_starttls_and_ssl_are_exclusive() -> None:
    with pytest.raises(ConfigError, match="starttls"):
        SMTPBackend(None, starttls=True, ssl=True)


# --- outbox -----------------------------------------------------------------------------


def test_outbox_writes_parseable_eml_files(tmp_path: Path) -> None:
    backend = OutboxBackend(None, path=str(tmp_path / "out"))
    with backend:
        results = backend.send([make_message(1), make_message(2, to="bob@example.org")])
    assert [(r.send_id, r.status, r.provider_id) for r in results] == [
        (1, SendStatus.SENT, "00000001.eml"),
        (2, SendStatus.SENT, "00000002.eml"),
    ]
    parsed = parse((tmp_path / "out" / "00000002.eml").read_bytes())
    assert parsed["To"] == "bob@example.org"
    assert body(parsed, "plain").strip() == "Bonjour Zoë"
    assert body(parsed, "html").strip() == "<p>Bonjour <b>Zoë</b></p>"
    assert unfolded(parsed, "List-Unsubscribe") == UNSUBSCRIBE
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_outbox_is_idempotent_per_send_id(tmp_path: Path) -> None:
    backend = OutboxBackend(None, path=str(tmp_path))
    backend.send([make_message(5, subject="first")])
    backend.send([make_message(5, subject="second")])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["00000005.eml"]  # no second file, no temp file left behind
    assert parse((tmp_path / "00000005.eml").read_bytes())["Subject"] == "second"


def test_outbox_path_is_relative_to_the_project(tmp_path: Path) -> None:
    engine = SimpleNamespace(settings=Settings(project_dir=tmp_path))
    backend = OutboxBackend(engine, path="mail/outbox")  # type: ignore[arg-type]
    backend.send([make_message(3)])
    assert (tmp_path / "mail" / "outbox" / "00000003.eml").is_file()


def test_outbox_refuses_header_injection_without_writing(tmp_path: Path) -> None:
    backend = OutboxBackend(None, path=str(tmp_path))
    [result] = backend.send([make_message(9, subject="x\r\nBcc: v@example.org")])
    assert result.status is SendStatus.PERMANENT_FAILURE
    assert result.error is not None and "Subject" in result.error
    assert list(tmp_path.iterdir()) == []


# --- memory -----------------------------------------------------------------------------


def test_memory_backend_keeps_messages_on_itself_and_the_engine() -> None:
    engine = SimpleNamespace()
    first = MemoryBackend(engine, fail_for=["BOB@example.org"])  # type: ignore[arg-type]
    results = first.send([make_message(1), make_message(2, to="Bob <bob@example.org>")])
    assert [r.status for r in results] == [SendStatus.SENT, SendStatus.PERMANENT_FAILURE]
    assert results[0].provider_id == "<1.run7@tailormail.example>"
    MemoryBackend(engine).send([make_message(3)])  # type: ignore[arg-type]
    assert [m.send_id for m in first.outbox] == [1]
    assert [m.send_id for m in engine.memory_outbox] == [1, 3]


def test_memory_backend_refuses_header_injection() -> None:
    backend = MemoryBackend(None)
    [result] = backend.send([make_message(1, headers={"X-A": "b\nc"})])
    assert result.status is SendStatus.PERMANENT_FAILURE
    assert backend.outbox == []


# --- MIME round trips ----------------------------------------------------------------


def test_non_ascii_display_names_and_subjects_survive_the_round_trip() -> None:
    message = make_message(from_address="Zoë Alertes <alerts@example.org>", subject="Été ✨ picks")
    parsed = parse(build_mime(message).as_bytes())
    assert parsed["Subject"] == "Été ✨ picks"
    assert parsed["From"].addresses[0].display_name == "Zoë Alertes"
    assert parsed["From"].addresses[0].addr_spec == "alerts@example.org"


def test_read_outbox_decodes_links_split_by_quoted_printable(tmp_path: Path) -> None:
    from plugins.delivery.outbox_command import read_outbox

    long_link = "https://shop.example.com/items/" + "x" * 120 + "?a=1&b=2"
    escaped = long_link.replace("&", "&amp;")
    message = make_message(html=f'<p><a href="{escaped}">Item</a></p>')
    OutboxBackend(None, path=str(tmp_path)).send([message])
    raw = (tmp_path / "00000001.eml").read_text()
    assert long_link not in raw  # the file is quoted-printable: the link is split there
    (shown,) = read_outbox(tmp_path)
    assert shown.links == [long_link]
    assert shown.to == "ann@example.org"


def test_outbox_keeps_a_utf8_address_readable(tmp_path: Path) -> None:
    OutboxBackend(None, path=str(tmp_path)).send([make_message(4, to="Zoë <zoë@example.org>")])
    raw = (tmp_path / "00000004.eml").read_bytes()
    assert "<zoë@example.org>".encode() in raw  # raw UTF-8 (RFC 6532), not unknown-8bit
    assert b"unknown-8bit" not in raw
