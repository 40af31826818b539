"""Model versions: the audit table of every training, and which version is the champion.

Each row is one trained model of a campaign: an online update of the champion, a
challenger with other settings, a challenger for changed settings in the campaign file,
or a rollback. It records the settings, the ledger range learned from, the off-policy
estimates that decided it, the decision and why. The champion is the newest row with role
``champion``; a rollback pins an older model as champion until ``release`` (or the next
rollback), so online updates and promotions wait meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, update
from sqlmodel import col, select

from engine.campaigns import Campaign
from engine.db import session_scope
from engine.errors import TailormailError
from engine.learning.estimators import Estimate
from engine.learning.logged import LoggedDecision
from engine.models import ModelVersionRow, RewardRow, utcnow
from engine.types import Policy

if TYPE_CHECKING:
    from engine.app import Engine

CHAMPION, RETIRED, REJECTED, AUDIT = "champion", "retired", "rejected", "audit"


def configured_settings(campaign: Campaign) -> dict[str, Any]:
    """The campaign file's policy settings: ``{"name": ..., "params": {...}}``."""
    return {"name": campaign.policy.name, "params": dict(campaign.policy.params)}


def build_policy(engine: Engine, settings: dict[str, Any], blob: bytes | None = None) -> Policy:
    """A policy made with ``settings``, loaded with ``blob`` when given."""
    policy = engine.policies.get(str(settings["name"]))(**dict(settings.get("params") or {}))
    if blob:
        policy.load(blob)
    return policy


def champion_policy(engine: Engine, campaign: Campaign) -> Policy:
    """The campaign's policy as it decides now: the champion's model and settings, or a
    fresh policy with the campaign file's settings when no model exists yet."""
    row = engine.champion(campaign)
    if row is None:
        return build_policy(engine, configured_settings(campaign))
    policy = build_policy(engine, row.settings or configured_settings(campaign), row.blob)
    policy.model_version = row.version
    return policy


def version_policy(engine: Engine, campaign: Campaign, version: str) -> Policy:
    """The policy of model ``version`` of ``campaign`` (``""``: a fresh one, configured as
    the campaign file says); falls back to the champion when that version is gone."""
    if version == "":
        return build_policy(engine, configured_settings(campaign))
    with session_scope(engine.db) as session:
        row = session.scalars(
            select(ModelVersionRow)
            .where(col(ModelVersionRow.campaign) == campaign.name)
            .where(col(ModelVersionRow.version) == version)
            .order_by(col(ModelVersionRow.id).desc())
            .limit(1)
        ).first()
    if row is None:
        return champion_policy(engine, campaign)
    policy = build_policy(engine, row.settings or configured_settings(campaign), row.blob)
    policy.model_version = row.version
    return policy


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


def _next_version(engine: Engine, campaign: Campaign, policy_name: str) -> str:
    with session_scope(engine.db) as session:
        count = session.scalar(
            select(func.count())
            .select_from(ModelVersionRow)
            .where(col(ModelVersionRow.campaign) == campaign.name)
        )
    return f"{campaign.name}-{policy_name}-v{int(count or 0) + 1}"


def record(engine: Engine, campaign: Campaign, training: Training) -> str:
    """Write ``training`` to the audit table; a ``champion`` role retires the previous one.

    Returns the new version's label.
    """
    previous = engine.champion(campaign)
    version = _next_version(engine, campaign, str(training.settings["name"]))
    stamps = [d.sent_at for d in training.data if d.sent_at is not None]
    ids = [d.ledger_id for d in training.data if d.ledger_id is not None]
    with session_scope(engine.db) as session:
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


def mark_learned(engine: Engine, campaign: Campaign, last_id: int, version: str) -> None:
    """Mark every reward of ``campaign`` up to ledger id ``last_id`` as learned by ``version``."""
    with session_scope(engine.db) as session:
        session.execute(
            update(RewardRow)
            .where(col(RewardRow.campaign) == campaign.name)
            .where(col(RewardRow.send_id) <= last_id)
            .where(col(RewardRow.learned_by).is_(None))
            .values(learned_by=version)
        )


def last_configured(engine: Engine, campaign: Campaign) -> dict[str, Any] | None:
    """The campaign file's settings as the newest audit row saw them (None: no rows yet)."""
    with session_scope(engine.db) as session:
        stmt = (
            select(col(ModelVersionRow.config_settings))
            .where(col(ModelVersionRow.campaign) == campaign.name)
            .where(col(ModelVersionRow.policy) == campaign.policy.name)
            .order_by(col(ModelVersionRow.id).desc())
            .limit(1)
        )
        seen: dict[str, Any] | None = session.scalars(stmt).first()
    return seen


def history(engine: Engine, campaign: str) -> list[ModelVersionRow]:
    """Every model version of ``campaign``, oldest first."""
    with session_scope(engine.db) as session:
        stmt = (
            select(ModelVersionRow)
            .where(col(ModelVersionRow.campaign) == campaign)
            .order_by(col(ModelVersionRow.id))
        )
        return list(session.scalars(stmt).all())


def rollback(engine: Engine, campaign: Campaign, version: str | None = None) -> ModelVersionRow:
    """Pin ``version`` (default: the current champion's parent) as the campaign's champion.

    The pinned model decides every later send; online updates and promotions wait until
    ``release``. The rollback itself is an audit row (role ``audit``, no model). Returns
    the pinned version's row.
    """
    rows = history(engine, campaign.name)
    current = engine.champion(campaign)
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
        engine,
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
    with session_scope(engine.db) as session:
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
    return next(r for r in history(engine, campaign.name) if r.version == version)


def release(engine: Engine, campaign: Campaign) -> str | None:
    """Unpin the campaign's champion so learning and promotions resume; its version."""
    current = engine.champion(campaign)
    if current is None or not current.pinned:
        return None
    with session_scope(engine.db) as session:
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
