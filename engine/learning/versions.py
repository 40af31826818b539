"""Model versions: the audit table of every training, and how it changes.

Each row is one trained model of a campaign: an online update of the champion, a
challenger with other settings, a challenger for changed settings in the campaign file,
or a rollback. It records the settings, the ledger range learned from, the off-policy
estimates that decided it, the decision and why. The champion is the newest row with role
``champion`` (``engine.learning.champions`` finds it and builds its policy); a rollback
pins an older model as champion until ``release`` (or the next rollback), so online
updates and promotions wait meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import col, select

from engine.campaigns import Campaign
from engine.db import session_scope
from engine.errors import TailormailError
from engine.learning.champions import CHAMPION, champion, configured_settings
from engine.learning.estimators import Estimate
from engine.learning.logged import LoggedDecision
from engine.models import ModelVersionRow, RewardRow, utcnow

RETIRED, REJECTED, AUDIT = "retired", "rejected", "audit"


@dataclass
class Training:
    """What one training found, before it is written to the audit table."""

    kind: str
    settings: dict[str, Any]
    decision: str
    reason: str
    role: str
    blob: bytes = b""
    data: Sequence[LoggedDecision] = ()
    n_feedback: int = 0
    n_eval: int = 0
    estimates: dict[str, Any] = field(default_factory=dict)


def estimate_dict(estimates: dict[str, Estimate]) -> dict[str, dict[str, float | int]]:
    """Estimates as JSON for the audit table."""
    return {name: value.as_dict() for name, value in estimates.items()}


def _next_version(db: SAEngine, campaign: Campaign, policy_name: str) -> str:
    with session_scope(db) as session:
        count = session.scalar(
            select(func.count())
            .select_from(ModelVersionRow)
            .where(col(ModelVersionRow.campaign) == campaign.name)
        )
    return f"{campaign.name}-{policy_name}-v{int(count or 0) + 1}"


def record(db: SAEngine, campaign: Campaign, training: Training) -> str:
    """Write ``training`` to the audit table; a ``champion`` role retires the previous one.

    Returns the new version's label.
    """
    previous = champion(db, campaign)
    version = _next_version(db, campaign, str(training.settings["name"]))
    stamps = [d.sent_at for d in training.data if d.sent_at is not None]
    ids = [d.ledger_id for d in training.data if d.ledger_id is not None]
    with session_scope(db) as session:
        if training.role == CHAMPION and previous is not None:
            session.execute(
                update(ModelVersionRow)
                .where(col(ModelVersionRow.campaign) == campaign.name)
                .where(col(ModelVersionRow.role) == CHAMPION)
                .values(role=RETIRED, pinned=False)
            )
        session.add(
            ModelVersionRow(
                campaign=campaign.name,
                version=version,
                policy=str(training.settings["name"]),
                role=training.role,
                blob=training.blob,
                n_feedback=training.n_feedback,
                parent=previous.version if previous else None,
                created_at=utcnow(),
                kind=training.kind,
                settings=training.settings,
                config_settings=configured_settings(campaign),
                data_first_id=min(ids) if ids else None,
                data_last_id=max(ids) if ids else None,
                data_from=min(stamps) if stamps else None,
                data_to=max(stamps) if stamps else None,
                n_eval=training.n_eval,
                estimates=training.estimates or None,
                decision=training.decision,
                reason=training.reason,
            )
        )
    return version


def mark_learned(db: SAEngine, campaign: Campaign, last_id: int, version: str) -> None:
    """Mark every reward of ``campaign`` up to ledger id ``last_id`` as learned by ``version``."""
    with session_scope(db) as session:
        session.execute(
            update(RewardRow)
            .where(col(RewardRow.campaign) == campaign.name)
            .where(col(RewardRow.send_id) <= last_id)
            .where(col(RewardRow.learned_by).is_(None))
            .values(learned_by=version)
        )


def last_configured(db: SAEngine, campaign: Campaign) -> dict[str, Any] | None:
    """The campaign file's settings as the newest audit row saw them (None: no rows yet)."""
    with session_scope(db) as session:
        stmt = (
            select(col(ModelVersionRow.config_settings))
            .where(col(ModelVersionRow.campaign) == campaign.name)
            .where(col(ModelVersionRow.policy) == campaign.policy.name)
            .order_by(col(ModelVersionRow.id).desc())
            .limit(1)
        )
        seen: dict[str, Any] | None = session.scalars(stmt).first()
    return seen


def history(db: SAEngine, campaign: str) -> list[ModelVersionRow]:
    """Every model version of ``campaign``, oldest first."""
    with session_scope(db) as session:
        stmt = (
            select(ModelVersionRow)
            .where(col(ModelVersionRow.campaign) == campaign)
            .order_by(col(ModelVersionRow.id))
        )
        return list(session.scalars(stmt).all())


def rollback(db: SAEngine, campaign: Campaign, version: str | None = None) -> ModelVersionRow:
    """Pin ``version`` (default: the current champion's parent) as the campaign's champion.

    The pinned model decides every later send; online updates and promotions wait until
    ``release``. The rollback itself is an audit row (role ``audit``, no model). Returns
    the pinned version's row.
    """
    rows = history(db, campaign.name)
    current = champion(db, campaign)
    if version is None:
        if current is None or current.parent is None:
            raise TailormailError(
                f"campaign {campaign.name!r} has no earlier model to roll back to "
                f"(see `tailormail models {campaign.name}`)"
            )
        version = current.parent
    target = next((r for r in rows if r.version == version), None)
    if target is None or not target.blob:
        kept = [r.version for r in rows if r.blob and r.policy == campaign.policy.name]
        raise TailormailError(
            f"campaign {campaign.name!r} has no stored model {version!r} "
            f"(models you can roll back to: {', '.join(kept) or 'none'})"
        )
    if target.policy != campaign.policy.name:
        raise TailormailError(
            f"model {version!r} is a {target.policy!r} model but campaign {campaign.name!r} "
            f"uses the {campaign.policy.name!r} policy"
        )
    record(
        db,
        campaign,
        Training(
            kind="rollback",
            settings=target.settings or configured_settings(campaign),
            decision=f"pinned {version}",
            reason="rolled back by hand"
            + (f" from {current.version}" if current else "")
            + "; its decisions log its version until "
            + f"`tailormail rollback {campaign.name} --release`",
            role=AUDIT,
        ),
    )
    with session_scope(db) as session:
        session.execute(
            update(ModelVersionRow)
            .where(col(ModelVersionRow.campaign) == campaign.name)
            .where(col(ModelVersionRow.role) == CHAMPION)
            .values(role=RETIRED, pinned=False)
        )
        session.execute(
            update(ModelVersionRow)
            .where(col(ModelVersionRow.id) == target.id)
            .values(role=CHAMPION, pinned=True)
        )
    return next(r for r in history(db, campaign.name) if r.version == version)


def release(db: SAEngine, campaign: Campaign) -> str | None:
    """Unpin the campaign's champion so learning and promotions resume; its version."""
    current = champion(db, campaign)
    if current is None or not current.pinned:
        return None
    with session_scope(db) as session:
        session.execute(
            update(ModelVersionRow)
            .where(col(ModelVersionRow.id) == current.id)
            .values(pinned=False)
        )
    return current.version


def data_range(row: ModelVersionRow) -> str:
    """The ledger range a version learned from, for people."""
    if row.data_first_id is None:
        return ""
    when = ""
    if isinstance(row.data_from, datetime) and isinstance(row.data_to, datetime):
        when = f" ({row.data_from:%Y-%m-%d} to {row.data_to:%Y-%m-%d})"
    return f"sends {row.data_first_id}-{row.data_last_id}{when}"
