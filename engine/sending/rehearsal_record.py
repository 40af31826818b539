"""What a dry run showed, kept so that ``send --new-run ID`` can send it or say what changed.

A dry run decides under a run id it prints; every decision is seeded by the decision id
(run id and recipient id, ``engine.sending.pipeline.decision_id_for``), so a real run under that
id decides the same, as long as the model, the campaign and the audience are the same.
The record holds what is needed to tell: the model version, the policy, the variant keys,
and each recipient's choice (a variant key, or ``-`` for a skip) under a keyed hash of
the recipient id, never an id, an address or an attribute. It is a JSON file of mode 0600
in ``<project>/rehearsals/``, named by a hash of the run id; records older than
``KEEP`` are removed when a dry run writes a new one, and a run that sent it removes its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlmodel import col, select

from engine.db import session_scope
from engine.models import LedgerRow, LedgerStatus, utcnow
from engine.sending.rehearsal_effects import SKIPPED

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.campaigns import Campaign

DIRECTORY = "rehearsals"
KEEP = 30 * 86400
"""Seconds a record is kept when no send used it."""
_PURPOSE = b"tailormail rehearsal record v1\x00"  # this key hashes recipient ids, nothing else


@dataclass
class RehearsalRecord:
    """A dry run of ``campaign`` as run ``run_id``: its model and its choices."""

    run_id: str
    campaign: str
    created_at: str
    model_version: str
    policy: str
    variants: list[str]
    key_check: str  # which secret keyed the choices (a project's secret may change)
    choices: dict[str, str]  # keyed recipient id -> variant key, or SKIPPED


@dataclass
class Comparison:
    """How a sent run compares with its dry run, recipient by recipient."""

    same: int  # got what the dry run showed (that variant, or a skip)
    other: int  # got another variant, or were skipped / sent when the dry run said otherwise
    left: int  # in the dry run, not in the send (they left the audience)
    joined: int  # in the send, not in the dry run


def _keyed(secret: bytes, text: str) -> str:
    return hmac.new(secret, _PURPOSE + text.encode(), hashlib.sha256).hexdigest()[:16]


def _path(engine: Engine, run_id: str) -> Path:
    name = hashlib.sha256(run_id.encode()).hexdigest()[:32]  # any id, never a path
    return engine.settings.path(DIRECTORY) / f"{name}.json"


def make_record(
    engine: Engine, campaign: Campaign, run_id: str, model: str, choices: Mapping[str, str]
) -> RehearsalRecord:
    """The record of a dry run of ``campaign`` under ``run_id`` that decided ``choices``
    (variant or ``SKIPPED`` by recipient id) with model version ``model``."""
    return RehearsalRecord(
        run_id=run_id,
        campaign=campaign.name,
        created_at=utcnow().isoformat(timespec="seconds"),
        model_version=model,
        policy=campaign.policy.name,
        variants=[v.key for v in campaign.variant_list],
        key_check=_keyed(engine.secret, "key check"),
        choices={_keyed(engine.secret, rid): choice for rid, choice in choices.items()},
    )


def save(engine: Engine, record: RehearsalRecord) -> Path:
    """Write ``record`` (mode 0600, atomically) and drop records older than ``KEEP``."""
    path = _path(engine, record.run_id)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for old in path.parent.glob("*.json"):
        with contextlib.suppress(OSError):  # another dry run may remove it first
            if time.time() - old.stat().st_mtime > KEEP:
                old.unlink()
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file of that name keeps its mode otherwise
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(asdict(record), out)
    os.replace(temporary, path)
    return path


def load(engine: Engine, campaign: str, run_id: str) -> RehearsalRecord | None:
    """The record of a dry run of ``campaign`` as ``run_id``; None if there is none (or it
    is unreadable, or of another campaign)."""
    try:
        data = json.loads(_path(engine, run_id).read_text(encoding="utf-8"))
        record = RehearsalRecord(**data)
    except (OSError, ValueError, TypeError):
        return None
    if record.run_id != run_id or record.campaign != campaign:
        return None
    return record


def discard(engine: Engine, run_id: str) -> None:
    """Remove the record of ``run_id`` (its run exists now: it is the ledger's to tell)."""
    with contextlib.suppress(FileNotFoundError):
        _path(engine, run_id).unlink()


def changes_since(engine: Engine, record: RehearsalRecord) -> list[str]:
    """What changed since the dry run that may make a run under its id send otherwise."""
    campaign = engine.campaign(record.campaign)
    changes = []
    if record.key_check != _keyed(engine.secret, "key check"):
        return ["the project secret changed since the dry run: its choices cannot be compared"]
    model = engine.champion_version(campaign)
    if model != record.model_version:
        was, now = record.model_version or "none yet", model or "none"
        changes.append(f"the model changed since the dry run ({was} -> {now})")
    if campaign.policy.name != record.policy:
        changes.append(
            f"the policy changed since the dry run ({record.policy} -> {campaign.policy.name})"
        )
    variants = [v.key for v in campaign.variant_list]
    if variants != record.variants:
        was_keys, now_keys = ", ".join(record.variants), ", ".join(variants)
        changes.append(f"the variants changed since the dry run ({was_keys} -> {now_keys})")
    pages = engine.audience_pages(campaign)
    now_in = {_keyed(engine.secret, r.recipient_id) for page in pages for r in page}
    joined, left = len(now_in - record.choices.keys()), len(record.choices.keys() - now_in)
    if joined or left:
        changes.append(
            f"the audience changed since the dry run: {joined} joined, {left} left "
            f"({len(record.choices)} -> {len(now_in)} recipients)"
        )
    return changes


def compare(engine: Engine, record: RehearsalRecord) -> Comparison:
    """How run ``record.run_id`` as sent compares with what its dry run showed."""
    with session_scope(engine.db) as session:
        stmt = select(
            col(LedgerRow.recipient_id), col(LedgerRow.status), col(LedgerRow.variant)
        ).where(col(LedgerRow.run_id) == record.run_id)
        rows = session.execute(stmt).all()
    sent = {
        _keyed(engine.secret, rid): SKIPPED if status == LedgerStatus.SKIPPED else str(variant)
        for rid, status, variant in rows
    }
    same = sum(1 for key, choice in sent.items() if record.choices.get(key) == choice)
    both = len(sent.keys() & record.choices.keys())
    return Comparison(
        same=same,
        other=both - same,
        left=len(record.choices.keys() - sent.keys()),
        joined=len(sent.keys() - record.choices.keys()),
    )
