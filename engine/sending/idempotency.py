"""``Idempotency-Key`` as the IETF draft (draft-ietf-httpapi-idempotency-key-header) has it.

A request with a key first looks it up (``stored``, a read): a key already answered gives
that answer again, or 422 when it came with another request (method, path or body). A new
key is written with its answer in the transaction that writes what the answer says
(``finish``): so a key is never taken by a request that then wrote nothing, and a crash
in between leaves neither. Two requests with one key at once both decide, and the second
to commit fails on the key (``IdempotencyError``, 409): a concurrent duplicate, which the
caller retries to get the first one's answer. Keys and answers are deleted after ``[api]
idempotency_retention`` (``purge``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, tuple_
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.orm import Session
from sqlmodel import col

from engine.db import session_scope
from engine.models import IdempotencyRow, utcnow

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Stored:
    """The answer a key's first request got."""

    status_code: int
    answer: Any


class IdempotencyError(Exception):
    """A key that cannot be used now: ``status`` 409 (in progress) or 422 (other request)."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def request_digest(method: str, path: str, body: bytes) -> str:
    """What a repeat must match: method, path and body."""
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


def stored(db: SAEngine, key_id: str, key: str, digest: str) -> Stored | None:
    """The answer ``key`` got (None: a new key); ``IdempotencyError`` (422) when the key
    was used with another request."""
    with session_scope(db) as session:
        found = session.get(IdempotencyRow, (key_id, key))
        if found is None:
            return None
        return _answer(found, digest)


def stored_many(
    db: SAEngine, wanted: Sequence[tuple[str, str, str]]
) -> dict[tuple[str, str], Stored | IdempotencyError]:
    """``stored`` for several (key id, key, digest) at once, in one query: the answer or
    the refusal of each key that was used before."""
    if not wanted:
        return {}
    found: dict[tuple[str, str], Stored | IdempotencyError] = {}
    digests = {(key_id, key): digest for key_id, key, digest in wanted}
    with session_scope(db) as session:
        stmt = select(IdempotencyRow).where(
            tuple_(col(IdempotencyRow.key_id), col(IdempotencyRow.key)).in_(list(digests))
        )
        for row in session.scalars(stmt).all():
            try:
                found[(row.key_id, row.key)] = _answer(row, digests[(row.key_id, row.key)])
            except IdempotencyError as refused:
                found[(row.key_id, row.key)] = refused
    return found


def _answer(found: IdempotencyRow, digest: str) -> Stored:
    if found.digest != digest:
        raise IdempotencyError(
            "idempotency_key_reused",
            "this Idempotency-Key was used with another request (method, path or body)",
            422,
        )
    return Stored(found.status_code or 0, found.answer)


def finish(session: Session, answers: Sequence[tuple[str, str, str, int, Any]]) -> None:
    """Write keys with their answers (key id, key, digest, status, body), in the
    transaction that wrote what they say, in one statement; a key another request wrote
    meanwhile makes that transaction fail (``IntegrityError``)."""
    if not answers:
        return
    now = utcnow()
    rows = [
        {
            "key_id": key_id,
            "key": key,
            "digest": digest,
            "status_code": status_code,
            "answer": answer,
            "created_at": now,
        }
        for key_id, key, digest, status_code, answer in answers
    ]
    session.execute(insert(IdempotencyRow.__table__), rows)  # type: ignore[attr-defined]


def concurrent(db: SAEngine, key_id: str, key: str, digest: str) -> IdempotencyError:
    """The refusal of a request whose key another request wrote while it was answered:
    409 (retry: the first answer comes back), or 422 when that was another request."""
    try:
        stored(db, key_id, key, digest)
    except IdempotencyError as error:
        return error
    return IdempotencyError(
        "idempotency_key_in_use",
        "a request with this Idempotency-Key was being answered at the same time; retry it "
        "to get that answer",
        409,
    )


def purge(db: SAEngine, before: datetime) -> int:
    """Delete the keys (and answers) older than ``before``; returns how many."""
    with session_scope(db) as session:
        stmt = delete(IdempotencyRow).where(col(IdempotencyRow.created_at) < before)
        return int(session.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]
