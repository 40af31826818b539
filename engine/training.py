"""Model versions: the policy learns from new rewards and its model is stored in the database.

Every worker loads the same champion from the ``model_versions`` table. Each version names
its parent and how much feedback it has seen, which is the audit trail of the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, update
from sqlmodel import col, select

from engine.campaigns import Campaign
from engine.db import session_scope
from engine.models import LedgerRow, ModelVersionRow, RewardRow, utcnow
from engine.types import Feedback
from engine.variants import variants_from_offered

if TYPE_CHECKING:
    from engine.app import Engine


def unlearned_feedback(engine: Engine, campaign: Campaign) -> tuple[list[int], list[Feedback]]:
    """Rewarded decisions the campaign's policy has not learned from yet.

    Each decision is replayed over the variants as offered then, not today's list. Rows
    decided by another policy are returned in the id list (so they are marked as seen) but
    yield no feedback.
    """
    today = campaign.variant_list
    stmt = (
        select(LedgerRow, col(RewardRow.reward))
        .join(RewardRow, col(RewardRow.send_id) == col(LedgerRow.id))
        .where(col(RewardRow.campaign) == campaign.name)
        .where(col(RewardRow.learned_by).is_(None))
        .order_by(col(LedgerRow.id))
    )
    ids: list[int] = []
    feedback: list[Feedback] = []
    with session_scope(engine.db) as session:
        for row, reward in session.execute(stmt).all():
            ids.append(row.id)
            variants = variants_from_offered(row.offered, today)
            if row.policy != campaign.policy.name or row.variant not in {v.key for v in variants}:
                continue
            feedback.append(
                Feedback(
                    context=dict(row.context or {}),
                    variants=variants,
                    chosen=row.variant,
                    probability=float(row.probability or 1.0),
                    reward=float(reward),
                )
            )
    return ids, feedback


def store_model(engine: Engine, campaign: Campaign, blob: bytes, n_new: int) -> str:
    """Save ``blob`` as the campaign's new champion and retire the previous one."""
    previous = engine.champion(campaign)
    with session_scope(engine.db) as session:
        count = session.scalar(
            select(func.count())
            .select_from(ModelVersionRow)
            .where(col(ModelVersionRow.campaign) == campaign.name)
        )
        version = f"{campaign.name}-{campaign.policy.name}-v{int(count or 0) + 1}"
        if previous is not None:
            session.execute(
                update(ModelVersionRow)
                .where(col(ModelVersionRow.id) == previous.id)
                .values(role="retired")
            )
        session.add(
            ModelVersionRow(
                campaign=campaign.name,
                version=version,
                policy=campaign.policy.name,
                role="champion",
                blob=blob,
                n_feedback=(previous.n_feedback if previous else 0) + n_new,
                parent=previous.version if previous else None,
                created_at=utcnow(),
            )
        )
    return version


def learn_online(engine: Engine, campaign: Campaign) -> str | None:
    """Feed new rewards to the champion and store the result; None when nothing is new."""
    ids, feedback = unlearned_feedback(engine, campaign)
    if not ids:
        return None
    version: str | None = None
    if feedback:
        policy = engine.make_policy(campaign)
        policy.learn(feedback)
        version = store_model(engine, campaign, policy.save(), len(feedback))
    with session_scope(engine.db) as session:
        session.execute(
            update(RewardRow)
            .where(col(RewardRow.send_id).in_(ids))
            .values(learned_by=version or "-")
        )
    return version
