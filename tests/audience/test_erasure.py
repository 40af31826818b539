"""Forgetting leaves nothing (issue 17, done-when 5): after ``tailormail forget``, no byte of
the SQLite database, its WAL or any file under the project directory names the person."""

from __future__ import annotations

import base64
import email
import email.policy
import html
import json
import quopri
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from kit import smtp as smtp_kit
from kit.project import TEST_SECRET, Project
from sqlmodel import select
from typer.testing import CliRunner

from engine import EventType, TrackingEvent
from engine.app import Engine
from engine.cli.commands import app
from engine.db import session_scope
from engine.feedback.events import record_event
from engine.feedback.intake import _Store
from engine.feedback.reward_job import join_rewards
from engine.ledger.journal import Journal, parse
from engine.models import LedgerRow, utcnow
from engine.types import SendResult, SendStatus

RID = "quorra-7f3"  # the recipient id
ADDRESS = "Quorra.Marker-7F3@Example.org"  # mixed case: the files may keep either
NAME = "Quorrävelle"  # non-ASCII: .eml files encode it (quoted-printable, base64, RFC 2047)
TESTER = "tester@example.net"


def spellings(text: str) -> set[bytes]:
    """The ways a file tailormail writes may spell ``text``: raw, case variants, JSON,
    HTML, URL, quoted-printable and RFC 2047 encodings."""
    forms = {text, text.lower(), text.upper(), text.casefold(), text.title()}
    found: set[bytes] = set()
    for form in forms:
        raw = form.encode()
        found |= {raw, form.encode("latin-1", "ignore") if form.isascii() else raw}
        found.add(json.dumps(form)[1:-1].encode())
        found.add(html.escape(form).encode())
        found.add(urllib.parse.quote(form).encode())
        found.add(urllib.parse.quote_plus(form).encode())
        found.add(quopri.encodestring(raw, header=True).rstrip(b"=\n"))
        found.add(quopri.encodestring(raw).rstrip(b"=\n"))
        found.add(base64.b64encode(raw).rstrip(b"="))
        found.add(form.encode("utf-16-le"))
    return {f for f in found if len(f) >= 6}


def decoded_email(data: bytes) -> bytes:
    """Every header and part of an email, decoded (base64 or quoted-printable bodies)."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    texts = [f"{key}: {value}" for key, value in message.items()]
    for part in message.walk():
        if not part.is_multipart():
            texts.append(str(part.get_content()))
    return "\n".join(texts).encode()


def files_naming(root: Path, needles: set[bytes]) -> Iterator[str]:
    """Where under ``root`` a needle appears (raw bytes, and decoded for .eml files)."""
    lowered = {n.lower() for n in needles}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        views = [data, data.lower()]
        if path.suffix == ".eml":
            views.append(decoded_email(data).lower())
        for view in views:
            hit = next((n for n in needles | lowered if n in view), None)
            if hit is not None:
                yield f"{path.relative_to(root)} holds {hit!r}"
                break


def write_inputs(directory: Path) -> tuple[Path, Path, Path]:
    """Recipients (the marked person among others), items and interactions: the operator's
    own files, kept outside the project (they are not files tailormail wrote)."""
    directory.mkdir()
    people = directory / "people.csv"
    rows = ["id,email,first_name,segment", f"{RID},{ADDRESS},{NAME},a"]
    rows += [f"u{i:03d},user{i}@example.com,Name{i},{'ab'[i % 2]}" for i in range(4)]
    people.write_text("\n".join(rows) + "\n")
    items = directory / "items.csv"
    lines = ["id,title,url,category"]
    lines += [f"i{i},Item {i},https://shop.example.com/i/{i},c{i % 2}" for i in range(6)]
    items.write_text("\n".join(lines) + "\n")
    interactions = directory / "interactions.csv"
    interactions.write_text(f"user_id,item_id,timestamp\n{RID},i1,1709294400\nu001,i2,1709294400\n")
    return people, items, interactions


def configure(root: Path, backend: str, smtp_port: int | None = None) -> None:
    lines = [f'database_url = "sqlite:///{root}/tailormail.db"', "[delivery]"]
    lines.append(f'backend = "{backend}"')
    if smtp_port is not None:
        lines += ["[delivery.smtp]", f"port = {smtp_port}", "retries = 0", "timeout = 5"]
    (root / "config" / "tailormail.toml").write_text("\n".join(lines) + "\n")


def invoke(runner: CliRunner, root: Path, *args: str) -> str:
    result = runner.invoke(app, ["--project", str(root), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_forget_leaves_no_byte_of_the_person_in_the_database_or_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAILORMAIL_SECRET", TEST_SECRET)
    project = Project(tmp_path / "project", "unused")
    root = project.root
    people, items, interactions = write_inputs(tmp_path / "inputs")
    runner = CliRunner()
    configure(root, "outbox")
    invoke(runner, root, "import", "recipients", str(people))
    invoke(runner, root, "import", "items", str(items))
    invoke(runner, root, "import", "interactions", str(interactions))

    # Under the outbox backend: a run, a test send rendered for them, a preview.
    invoke(runner, root, "send", "alerts", "--new-run", "r1")
    invoke(runner, root, "send", "alerts", "--test-to", TESTER, "--recipient", RID)
    invoke(runner, root, "preview", "alerts", "--recipient", RID, "--out", str(root / "preview"))
    outbox = sorted(p.name for p in (root / "outbox").glob("*.eml"))
    assert len(outbox) == 7 and "test-a.eml" in outbox  # 5 sends, 2 test copies
    assert next(files_naming(root / "preview", spellings(NAME)), None) is not None

    engine = Engine(project_dir=root)
    try:
        # A click on their email, and a provider event naming them that matches no send.
        [sent] = [r for r in engine_rows(engine) if r.recipient_id == RID]
        assert sent.id is not None and sent.links
        click = TrackingEvent(
            EventType.CLICK, sent.id, utcnow(), url=sent.links[0], user_agent=f"{NAME} phone"
        )
        record_event(engine, click)
        bounce = TrackingEvent(
            EventType.BOUNCE,
            None,
            utcnow(),
            provider_message_id="<lost-0001@mail.example>",
            recipient_email=ADDRESS.lower(),
            data={"bounce_type": "soft", "reason": f"452 4.2.2 <{ADDRESS}> mailbox full"},
        )
        record_event(engine, bounce, dedupe_key="standard:msg_lost_0001")
        join_rewards(engine, now=utcnow() + timedelta(hours=2))
        # A record the intake kept aside.
        _Store(engine).lines([b'{"q":1,"t":"click","u":"mailto:' + ADDRESS.encode() + b'"'])
    finally:
        engine.close()
    export = root / "exports" / "alerts.jsonl"
    export.parent.mkdir()
    invoke(runner, root, "export", "alerts", "-o", str(export))
    assert RID.encode() in export.read_bytes()

    # The operator switches to SMTP; the server refuses them, quoting the address.
    refusal = f"550 5.1.1 <{ADDRESS.lower()}>: Recipient address rejected"
    mailbox = smtp_kit.Mailbox(refuse={ADDRESS: refusal, ADDRESS.lower(): refusal})
    with smtp_kit.serve(mailbox) as port:
        configure(root, "smtp", port)
        invoke(runner, root, "send", "alerts", "--new-run", "r2")
    assert mailbox.received  # the others got theirs
    # The journal of a worker that died as the server answered, quoting the address.
    journal = Journal(root / "journal", "dead-worker").open()
    answer = f"550 5.1.1 <{ADDRESS}>: Recipient address rejected"
    journal.outcome(SendResult(sent.id, SendStatus.PERMANENT_FAILURE, error=answer))
    journal.close(discard=False)

    everything = spellings(ADDRESS) | spellings(NAME) | spellings(RID)
    before = list(files_naming(tmp_path, everything))
    assert len(before) > 5, before  # the scan finds them where they are

    # Another process has the database open (as `serve` does): its WAL outlives forget.
    bystander = Engine(project_dir=root)
    try:
        assert engine_rows(bystander)
        output = invoke(runner, root, "forget", ADDRESS.upper(), "--yes")
        assert (root / "tailormail.db").is_file()  # the database, in the scan below
        left = list(files_naming(root, everything))
    finally:
        bystander.close()
    assert "Forgot" in output
    assert left == [], "\n".join(left)
    # The dead worker's journal still reads: its outcome lines kept their length.
    outcome = parse((root / "journal" / "dead-worker.journal").read_bytes()).outcomes[sent.id]
    assert outcome.error is not None and outcome.error.startswith("550 5.1.1 <*****")
    # The others' data stays.
    assert (root / "outbox").is_dir() and len(list((root / "outbox").glob("*.eml"))) == 4
    assert b'"u001"' in export.read_bytes()


def engine_rows(engine: Engine) -> list[LedgerRow]:
    with session_scope(engine.db) as session:
        return list(session.scalars(select(LedgerRow)).all())


def test_previews_and_exports_are_the_owners_only_and_git_ignores_them(
    sqlite_project: Project, tmp_path: Path
) -> None:
    from engine.learning.export import export_to_file
    from engine.scaffold import scaffold_project
    from engine.sending.rehearsal import render_variants, write_preview
    from plugins.delivery.outbox import OutboxBackend

    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=2)
    folder = sqlite_project.root / "preview"
    folder.mkdir()
    (folder / "a.eml").write_text("an older preview")
    (folder / "a.eml").chmod(0o644)
    written = write_preview(render_variants(engine, "alerts", recipient_id="u001"), folder, engine)
    export = sqlite_project.root / "exports" / "alerts.jsonl"
    export.parent.mkdir()
    export.write_text("")
    export.chmod(0o644)
    export_to_file(engine, "alerts", "jsonl", export)
    OutboxBackend(engine, path="mail").open()
    engine.close()

    assert {oct(p.stat().st_mode & 0o777) for p in [*written, export]} == {"0o600"}
    assert oct((sqlite_project.root / "mail").stat().st_mode & 0o777) == "0o700"
    scaffold_project(tmp_path / "fresh")
    ignored = (tmp_path / "fresh" / ".gitignore").read_text().split("\n")
    assert {"outbox/", "preview/", "exports/", "spool/", "journal/", "*.db-wal"} <= set(ignored)
