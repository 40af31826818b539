"""``tailormail secret rotate``: replacing the project secret on purpose, saying what it costs.

The new secret becomes the file's first line and signs everything from now on; the
replaced one (and up to ``keep_previous`` older ones) stay as further lines, still
accepted for links already sent, until someone deletes them. When the secret was lost,
rotation is the way on: links already sent answer 404, and nobody is un-forgotten (the
forgotten addresses' key is the database's own: ``engine.audience.forgetting_key``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import col

from engine.audience.forgetting_key import ensure_forgetting_key, stored_forgetting_key
from engine.db import make_db, session_scope
from engine.errors import ConfigError
from engine.models import ForgottenAddressRow, LedgerRow, LedgerStatus
from engine.secret import (
    PREVIOUS_ENV,
    SECRET_ENV,
    SecretRotationError,
    new_secret,
    read_secret_lines,
    secret_file_exists,
    write_secret_file,
)
from engine.settings import Settings

HEADER = (
    "# tailormail project secret. The first secret line signs new links; the lines after "
    "it are previous secrets, still accepted for links already sent: delete one to stop "
    "accepting it."
)


@dataclass(frozen=True)
class Rotation:
    """What a rotation did: where, whether the old secret was there, what still verifies."""

    path: Path
    lost: bool  # there was no readable secret: links already sent stop working
    kept: int  # previous secrets still accepted
    dropped: int  # previous secrets no longer accepted
    sent: int  # emails sent so far (their links are what may stop working)
    unmatched_forgotten: int  # forgotten addresses hashed with a lost secret, never stored


def rotate_secret(settings: Settings, keep_previous: int = 1) -> Rotation:
    """Write a new secret to the secret file, keeping ``keep_previous`` previous ones.

    Raises ``SecretRotationError`` when the secret comes from ``TAILORMAIL_SECRET`` (it is
    rotated where it is set) and ``ConfigError`` for a negative ``keep_previous``.
    """
    if settings.secret is not None:
        raise SecretRotationError(
            f"the secret comes from {SECRET_ENV}, so rotate it where it is set: put a new "
            f"value in {SECRET_ENV} (python -c 'import secrets; "
            f"print(secrets.token_urlsafe(32))') and the old one in {PREVIOUS_ENV} while "
            "links already sent should keep working"
        )
    if keep_previous < 0:
        raise ConfigError(f"--keep-previous must be 0 or more, not {keep_previous}")
    path = settings.path(settings.secret_file)
    old = _readable_secrets(path)
    db = make_db(settings.resolved_database_url)
    try:
        unmatched = 0
        if old:  # store the key while the secret it may derive from is still here
            ensure_forgetting_key(db, old[0])
        elif stored_forgetting_key(db) is None:
            unmatched = _count(db, ForgottenAddressRow.address_hash)
            ensure_forgetting_key(db, None)  # no old secret: a random key for what comes
        sent = _count(db, LedgerRow.id, col(LedgerRow.status) == LedgerStatus.SENT)
    finally:
        db.dispose()
    kept = [line.decode() for line in old[:keep_previous]]
    write_secret_file(path, [HEADER, new_secret(), *kept], replace=True)
    return Rotation(path, not old, len(kept), len(old) - len(kept), sent, unmatched)


def _readable_secrets(path: Path) -> list[bytes]:
    """The secrets in ``path`` (current first), or [] when it is missing or unusable."""
    if not secret_file_exists(path):
        return []
    try:
        return read_secret_lines(path)
    except ConfigError:
        return []  # empty or unreadable: as good as lost, and rotation replaces it


def _count(db: SAEngine, column: Any, *where: Any) -> int:
    with session_scope(db) as session:
        return int(session.scalar(select(func.count(column)).where(*where)) or 0)
