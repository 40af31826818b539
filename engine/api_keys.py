"""Keys of the HTTP API: created and revoked from the command line (``tailormail keys``),
stored hashed, each with scopes and, optionally, the campaigns it may act on.

A key reads ``tm_<id>_<secret>``: the id is public (lists and logs show it), the secret is
256 random bits shown once, at creation. The database keeps the SHA-256 of the secret, so
a copy of the table lets nobody call the API; a key is checked in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import col

from engine.clock import utcnow
from engine.db import session_scope
from engine.errors import TailormailError
from engine.models import ApiKeyRow

SCOPES = ("trigger", "read")
"""What a key may do: ``trigger`` sends (and cancels) triggered alerts, ``read`` reads them."""
_KEY = re.compile(r"tm_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class ApiKey:
    """A key as the API sees it once verified (never its secret)."""

    id: str
    name: str
    scopes: tuple[str, ...]
    campaigns: tuple[str, ...] | None  # None: every campaign

    def allows(self, scope: str, campaign: str | None = None) -> bool:
        """Whether the key has ``scope`` and (if one is named) may act on ``campaign``."""
        if scope not in self.scopes:
            return False
        return campaign is None or self.campaigns is None or campaign in self.campaigns


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    db: SAEngine, name: str, scopes: Sequence[str], campaigns: Sequence[str] | None = None
) -> tuple[ApiKey, str]:
    """Store a new key; returns it and the full key text, which nothing can show again."""
    name = name.strip()
    if not name or len(name) > 64 or not name.isprintable():
        raise TailormailError("a key's name must be 1 to 64 printable characters")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise TailormailError(f"unknown scope {', '.join(unknown)}; use {' and/or '.join(SCOPES)}")
    if not scopes:
        raise TailormailError(f"a key needs at least one scope ({' or '.join(SCOPES)})")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    ordered = tuple(s for s in SCOPES if s in scopes)
    allowed = tuple(sorted(set(campaigns))) if campaigns else None
    row = ApiKeyRow(
        id=key_id,
        name=name,
        secret_hash=_digest(secret),
        scopes=list(ordered),
        campaigns=list(allowed) if allowed is not None else None,
    )
    with session_scope(db) as session:
        session.add(row)
    return ApiKey(key_id, name, ordered, allowed), f"tm_{key_id}_{secret}"


def verify_key(db: SAEngine, text: str) -> ApiKey | None:
    """The key ``text`` is, if it is well formed, stored, not revoked and its secret
    matches; else None (never an error: a caller answers 401 either way)."""
    match = _KEY.fullmatch(text.strip())
    if match is None:
        return None
    key_id, secret = match.groups()
    with session_scope(db) as session:
        row = session.scalars(select(ApiKeyRow).where(col(ApiKeyRow.id) == key_id)).first()
    if row is None or row.revoked_at is not None:
        _digest(secret)  # the same work either way: no timing tells a known id
        return None
    if not hmac.compare_digest(_digest(secret), row.secret_hash):
        return None
    return _api_key(row)


def list_keys(db: SAEngine) -> list[ApiKeyRow]:
    """Every key, newest first, revoked ones included (their ``revoked_at`` set)."""
    with session_scope(db) as session:
        stmt = select(ApiKeyRow).order_by(col(ApiKeyRow.created_at).desc())
        return list(session.scalars(stmt).all())


def revoke_key(db: SAEngine, key_id: str) -> ApiKey:
    """Revoke key ``key_id`` at once (a second revoke changes nothing); returns it.

    Raises ``TailormailError`` naming the id when no key has it.
    """
    with session_scope(db) as session:
        row = session.get(ApiKeyRow, key_id.strip())
        if row is None:
            raise TailormailError(f"no API key has the id {key_id!r} (`tailormail keys list`)")
        if row.revoked_at is None:
            session.execute(
                update(ApiKeyRow).where(col(ApiKeyRow.id) == row.id).values(revoked_at=utcnow())
            )
        return _api_key(row)


def _api_key(row: ApiKeyRow) -> ApiKey:
    campaigns = tuple(row.campaigns) if row.campaigns is not None else None
    return ApiKey(row.id, row.name, tuple(row.scopes or ()), campaigns)
