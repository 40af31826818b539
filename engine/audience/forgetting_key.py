"""The key of forgotten addresses' hashes: the database's own, not the link secret's.

It used to be derived from the link secret, so a lost or replaced secret un-forgot
everyone: the next import mailed them again. Now it is kept in ``project_keys`` and never
changes. On the first start after the upgrade a database that already holds forgotten
addresses stores the key derived the old way (their hashes keep matching); a database
without any gets a random key.

The trade-off: anyone who can read the database holds the key too, so they can test a
guessed address against the hashes (they could read the other tables anyway); the
hashes still never show an address to someone who has no guess.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import col

from engine.db import insert_ignore, session_scope
from engine.models import ForgottenAddressRow, ProjectKeyRow, utcnow

KEY_NAME = "forgotten_addresses"


def legacy_forgetting_key(secret: bytes) -> bytes:
    """The key earlier releases derived from the link secret."""
    return hashlib.sha256(b"tailormail forgotten address v1\0" + secret).digest()


def stored_forgetting_key(db: SAEngine) -> bytes | None:
    """The key in the database, or None before ``ensure_forgetting_key`` stored one."""
    with session_scope(db) as session:
        row = session.get(ProjectKeyRow, KEY_NAME)
        return bytes.fromhex(row.value) if row is not None else None


def ensure_forgetting_key(db: SAEngine, secret: bytes | None) -> bytes:
    """The database's key of forgotten addresses, stored first if there is none yet.

    ``secret`` (the link secret in use) only matters once, for a database that has
    forgotten addresses hashed the old way; None (the secret that hashed them is lost)
    stores a random key. Racing first starts agree on one key.
    """
    key = stored_forgetting_key(db)
    if key is not None:
        return key
    with session_scope(db) as session:
        hashed_before = session.scalar(select(col(ForgottenAddressRow.address_hash)).limit(1))
        if hashed_before and secret is not None:
            key = legacy_forgetting_key(secret)  # the old hashes keep matching
        else:
            key = secrets.token_bytes(32)
        row = {"name": KEY_NAME, "value": key.hex(), "created_at": utcnow()}
        insert_ignore(session, ProjectKeyRow, [row])
    stored = stored_forgetting_key(db)
    assert stored is not None  # inserted above, by this process or a racing one
    return stored
