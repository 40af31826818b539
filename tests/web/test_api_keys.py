"""Keys of the HTTP API (``engine.api_keys``, ``tailormail keys``): stored hashed, shown
once, scoped, limited to campaigns, revoked at once; a forged or malformed key is no key."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from kit.cli import fails, tailormail
from kit.project import Project
from sqlalchemy import select

from engine.api_keys import create_key, list_keys, revoke_key, verify_key
from engine.db import session_scope
from engine.errors import TailormailError
from engine.models import ApiKeyRow


def test_a_key_is_stored_hashed_and_verified_with_its_scopes(project: Project) -> None:
    engine = project.engine()
    try:
        key, text = create_key(engine.db, "shop", ["read", "trigger"], ["alerts"])
        assert text.startswith(f"tm_{key.id}_") and key.scopes == ("trigger", "read")
        with session_scope(engine.db) as session:
            [row] = session.scalars(select(ApiKeyRow)).all()
        secret = text[len(f"tm_{key.id}_") :]  # the secret may hold "_" itself
        assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in (row.secret_hash + str(row.scopes) + row.name)
        found = verify_key(engine.db, text)
        assert found == key
        assert found.allows("trigger", "alerts") and found.allows("read")
        assert not found.allows("trigger", "other-campaign")
        reader, reader_text = create_key(engine.db, "dashboard", ["read"])
        assert verify_key(engine.db, reader_text) == reader
        assert reader.allows("read", "any") and not reader.allows("trigger", "any")
    finally:
        engine.close()


@pytest.mark.parametrize(
    "forge",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # another secret, same id
        lambda t: "tm_000000000000_" + t.split("_", 2)[2],  # another id, same secret
        lambda t: t.upper(),
        lambda t: t + "x",
        lambda t: "",
        lambda t: "Bearer " + t,
        lambda t: "tm_" + "_" * 60,
    ],
)
def test_a_forged_or_malformed_key_is_no_key(project: Project, forge: object) -> None:
    engine = project.engine()
    try:
        _, text = create_key(engine.db, "shop", ["trigger"])
        assert callable(forge)
        assert verify_key(engine.db, forge(text)) is None
        assert verify_key(engine.db, text) is not None
    finally:
        engine.close()


def test_a_revoked_key_is_refused_at_once_and_listed_as_revoked(project: Project) -> None:
    engine = project.engine()
    try:
        key, text = create_key(engine.db, "shop", ["trigger"])
        assert revoke_key(engine.db, key.id) == key
        assert verify_key(engine.db, text) is None
        assert revoke_key(engine.db, key.id) == key  # a second revoke changes nothing
        [row] = list_keys(engine.db)
        assert row.revoked_at is not None
        with pytest.raises(TailormailError, match="no API key has the id 'nope'"):
            revoke_key(engine.db, "nope")
        for scopes, says in (([], "at least one scope"), (["write"], "unknown scope write")):
            with pytest.raises(TailormailError, match=says):
                create_key(engine.db, "x", scopes)
        with pytest.raises(TailormailError, match="1 to 64 printable"):
            create_key(engine.db, " ", ["read"])
    finally:
        engine.close()


def test_keys_on_the_command_line_show_the_key_once(tmp_path: Path) -> None:
    assert tailormail("init", "shop", cwd=tmp_path).returncode == 0
    shop = tmp_path / "shop"
    made = tailormail("keys", "create", "app", "--scope", "trigger", cwd=shop)
    assert made.returncode == 0, made.stderr
    text = next(w for w in made.stdout.split() if w.startswith("tm_"))
    key_id = text.split("_")[1]
    listed = tailormail("keys", "list", cwd=shop)
    assert key_id in listed.stdout and text not in listed.stdout
    fails(tailormail("keys", "create", "x", "--scope", "write", cwd=shop), "unknown scope write")
    fails(
        tailormail("keys", "create", "x", "-s", "read", "-c", "nope", cwd=shop),
        "unknown campaign 'nope'",
    )
    fails(tailormail("keys", "revoke", "nope", cwd=shop), "no API key has the id 'nope'")
    assert tailormail("keys", "revoke", key_id, cwd=shop).returncode == 0
    [line] = [
        row for row in tailormail("keys", "list", cwd=shop).stdout.splitlines() if key_id in row
    ]
    assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d", line)) == 2  # created, revoked
