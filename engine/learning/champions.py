"""The champion: which model of a campaign decides now, and the policy it decides with.

The champion is the newest row of the audit table (``engine.learning.versions``) with role
``champion`` for the campaign's configured policy. These queries take what they read, the
database and the policy registry, and never the ``Engine``: the Engine and every stage
above it call down to them, and nothing here calls back up.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import col, select

from engine.campaigns import Campaign
from engine.db import session_scope
from engine.hookspecs import PolicyFactory
from engine.models import ModelVersionRow
from engine.registry import Registry
from engine.types import Policy

CHAMPION = "champion"


def configured_settings(campaign: Campaign) -> dict[str, Any]:
    """The campaign file's policy settings: ``{"name": ..., "params": {...}}``."""
    return {"name": campaign.policy.name, "params": dict(campaign.policy.params)}


def champion(db: SAEngine, campaign: Campaign) -> ModelVersionRow | None:
    """The newest champion model of ``campaign`` for its configured policy."""
    with session_scope(db) as session:
        stmt = (
            select(ModelVersionRow)
            .where(col(ModelVersionRow.campaign) == campaign.name)
            .where(col(ModelVersionRow.policy) == campaign.policy.name)
            .where(col(ModelVersionRow.role) == CHAMPION)
            .order_by(col(ModelVersionRow.id).desc())
            .limit(1)
        )
        return session.scalars(stmt).first()


def champion_version(db: SAEngine, campaign: Campaign) -> str:
    """The version a run starting now decides with (``""``: no model yet)."""
    row = champion(db, campaign)
    return row.version if row is not None else ""


def build_policy(
    policies: Registry[PolicyFactory], settings: dict[str, Any], blob: bytes | None = None
) -> Policy:
    """A policy made with ``settings``, loaded with ``blob`` when given."""
    policy = policies.get(str(settings["name"]))(**dict(settings.get("params") or {}))
    if blob:
        policy.load(blob)
    return policy


def _row_policy(
    policies: Registry[PolicyFactory], campaign: Campaign, row: ModelVersionRow
) -> Policy:
    """The policy of a stored model, labelled with its version."""
    policy = build_policy(policies, row.settings or configured_settings(campaign), row.blob)
    policy.model_version = row.version
    return policy


def champion_policy(db: SAEngine, policies: Registry[PolicyFactory], campaign: Campaign) -> Policy:
    """The campaign's policy as it decides now: the champion's model and settings, or a
    fresh policy with the campaign file's settings when no model exists yet."""
    row = champion(db, campaign)
    if row is None:
        return build_policy(policies, configured_settings(campaign))
    return _row_policy(policies, campaign, row)


def version_policy(
    db: SAEngine, policies: Registry[PolicyFactory], campaign: Campaign, version: str
) -> Policy:
    """The policy of model ``version`` of ``campaign`` (``""``: a fresh one, configured as
    the campaign file says); falls back to the champion when that version is gone."""
    if version == "":
        return build_policy(policies, configured_settings(campaign))
    with session_scope(db) as session:
        row = session.scalars(
            select(ModelVersionRow)
            .where(col(ModelVersionRow.campaign) == campaign.name)
            .where(col(ModelVersionRow.version) == version)
            .order_by(col(ModelVersionRow.id).desc())
            .limit(1)
        ).first()
    if row is None:
        return champion_policy(db, policies, campaign)
    return _row_policy(policies, campaign, row)


def deciding_policy(
    db: SAEngine,
    policies: Registry[PolicyFactory],
    campaign: Campaign,
    version: str | None = None,
) -> Policy:
    """The campaign's policy as it decides now (``champion_policy``), or, with ``version``
    (what a run pinned when it started), that model's (``version_policy``): every worker
    of a run decides with the same one, whatever is promoted meanwhile."""
    if version is None:
        return champion_policy(db, policies, campaign)
    return version_policy(db, policies, campaign, version)
