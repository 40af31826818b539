"""The project secret is never replaced silently, rotation keeps old links working for a
while, and neither a lost nor a rotated secret un-forgets anyone (issue 17, Done-when 6).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from kit.cli import cli, tailormail
from kit.project import Project
from sqlalchemy import delete

from engine.addresses import address_key
from engine.app import Engine
from engine.audience.forgetting import forget, forgotten
from engine.audience.importer import import_file
from engine.db import session_scope
from engine.errors import ConfigError
from engine.models import ForgottenAddressRow, ProjectKeyRow
from engine.project_secret import database_needs_secret
from engine.scaffold import scaffold_project
from engine.secret import MissingSecretError
from engine.secret_rotation import rotate_secret
from engine.sending.real_run import run_campaign
from engine.settings import load_settings
from engine.tokens import Tokens

CAMPAIGN = "weekly-picks"
RESTORE_HINT = "restore it from a backup"
# Every command here opens the project's Engine, so each needs the secret.
NEEDS_THE_SECRET = [
    ("send", CAMPAIGN),
    ("report", CAMPAIGN),
    ("preview", CAMPAIGN),
    ("forget", "u001", "--yes"),
    ("rewards",),
    ("runs",),
    ("secret", "status"),
]


def engine_for(project: Path) -> Engine:
    """The project's Engine as a command builds it: its secret file, no TAILORMAIL_SECRET."""
    settings = load_settings(project_dir=project, environ={})
    return Engine(settings=settings, load_entry_points=False)


@pytest.fixture
def sent(tmp_path: Path) -> Path:
    """A new sample project (``tailormail init``) with one run sent to its outbox."""
    project = tmp_path / "shop"
    scaffold_project(project)
    with engine_for(project) as engine:
        for kind, name in (("recipients", "people.csv"), ("items", "items.csv")):
            import_file(engine.db, kind, project / name)
        run_campaign(engine, CAMPAIGN, run_id="r1")
    return project


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_a_lost_secret_stops_every_command_with_the_restore_hint_and_creates_nothing(
    sent: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (sent / ".tailormail-secret").unlink()
    before = files_under(sent)
    monkeypatch.chdir(sent)
    for command in NEEDS_THE_SECRET:  # in process (fast); serve below, as a user runs it
        assert cli(monkeypatch, *command) == 2, command
        assert_one_restore_hint(capsys.readouterr().err)
        assert files_under(sent) == before, command  # no secret file, no -wal, no outbox
    done = tailormail("serve", "--port", "0", cwd=sent)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert_one_restore_hint(done.stderr)
    assert files_under(sent) == before


def assert_one_restore_hint(stderr: str) -> None:
    (line,) = stderr.strip().splitlines()
    assert line.startswith("error: the secret file ") and RESTORE_HINT in line, line
    assert "run `tailormail secret rotate`" in line


def test_after_an_explicit_rotation_a_forgotten_person_reimported_is_still_skipped(
    sent: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with engine_for(sent) as engine:
        forget(engine, "u001")
        people = engine.audience(engine.campaign(CAMPAIGN))
        assert "u001" not in {p.recipient_id for p in people}  # the row is erased
    (sent / ".tailormail-secret").unlink()  # lost on a fresh deploy
    with pytest.raises(MissingSecretError, match=RESTORE_HINT):
        engine_for(sent)
    monkeypatch.chdir(sent)
    assert cli(monkeypatch, "secret", "rotate", "--yes") == 0
    said = capsys.readouterr().out
    assert "links in the 40 emails already sent answer 404 from now on" in said
    assert "Forgotten addresses stay forgotten" in said
    with engine_for(sent) as engine:
        import_file(engine.db, "recipients", sent / "people.csv")
        campaign = engine.campaign(CAMPAIGN)
        back = next(p for p in engine.audience(campaign) if p.recipient_id == "u001")
        reasons = engine.ineligible(campaign, [back])
    assert reasons == {"u001": "forgotten (erased on request: never mailed again)"}


def test_hashes_made_with_the_old_derived_key_keep_matching_across_a_rotation(
    sent: Path,
) -> None:
    """A database from before the key was stored: its hashes were keyed by the secret."""
    secret = (sent / ".tailormail-secret").read_bytes().strip()
    legacy = hashlib.sha256(b"tailormail forgotten address v1\0" + secret).digest()
    address = "Gone.Person@Example.com"
    old_hash = hmac.new(legacy, address_key(address).encode(), hashlib.sha256).hexdigest()
    with engine_for(sent) as engine, session_scope(engine.db) as session:
        session.execute(delete(ProjectKeyRow))  # as before migration 0015 stored one
        session.add(ForgottenAddressRow(address_hash=f"hmac-sha256:{old_hash}"))
    settings = load_settings(project_dir=sent, environ={})
    rotate_secret(settings)  # stores the key derived from the secret it replaces
    with engine_for(sent) as engine:
        assert engine.secret != secret
        with session_scope(engine.db) as session:
            assert forgotten(session, engine.forgetting_key, [address]) == {
                "gone.person@example.com"
            }


def test_rotation_keeps_the_previous_secret_accepted_until_its_line_is_deleted(
    sent: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = sent / ".tailormail-secret"
    old = path.read_bytes().strip()
    old_link = Tokens(old).click(5, 0, "https://shop.example.com/x")
    monkeypatch.chdir(sent)
    assert cli(monkeypatch, "secret", "rotate", "--yes") == 0
    assert "keep working while the previous secret stays on line 3" in capsys.readouterr().out
    assert path.stat().st_mode & 0o777 == 0o600
    with engine_for(sent) as engine:
        assert engine.secret != old and engine.secrets.previous == (old,)
        assert engine.tokens.verify(old_link, "click") is not None  # an email already sent
        new_link = engine.tokens.click(5, 0, "https://shop.example.com/x")
    assert Tokens(old).verify(new_link, "click") is None  # new links use the new secret
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n")  # the operator ends the transition
    with engine_for(sent) as engine:
        assert engine.tokens.verify(old_link, "click") is None


def test_previous_secrets_from_the_environment_verify_links(tmp_path: Path) -> None:
    old, new = "o" * 40, "n" * 40
    settings = load_settings(
        project_dir=tmp_path,
        environ={"TAILORMAIL_SECRET": new, "TAILORMAIL_SECRET_PREVIOUS": f"{old} {'p' * 40}"},
    )
    assert [s.get_secret_value() for s in settings.secret_previous] == [old, "p" * 40]
    assert old not in repr(settings)
    with pytest.raises(ConfigError, match="TAILORMAIL_SECRET_PREVIOUS is 5 bytes long"):
        load_settings(
            project_dir=tmp_path,
            environ={"TAILORMAIL_SECRET": new, "TAILORMAIL_SECRET_PREVIOUS": "short"},
        )
    with pytest.raises(ConfigError, match="rotate it where it is set"):
        rotate_secret(settings)


def test_a_new_project_still_creates_its_secret_on_first_use(tmp_path: Path) -> None:
    scaffold_project(tmp_path / "new")
    assert not (tmp_path / "new" / ".tailormail-secret").exists()
    with engine_for(tmp_path / "new") as engine:
        assert len(engine.secret) >= 32
    assert (tmp_path / "new" / ".tailormail-secret").stat().st_mode & 0o777 == 0o600


def test_the_database_probe_sees_sends_on_each_database(project: Project) -> None:
    assert not database_needs_secret(project.db_url)  # nothing there yet
    engine = project.engine()
    assert not database_needs_secret(project.db_url)  # tables, no rows
    project.seed(engine, people=2)
    run_campaign(engine, "alerts", run_id="r1")
    engine.close()
    assert database_needs_secret(project.db_url)
