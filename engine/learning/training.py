"""Online learning: the champion learns from each reward batch, and each update is checked.

Every batch of new rewards teaches a copy of the champion (same settings, more data). The
update is a new version evaluated against its parent off-policy on that batch (the paired
DR difference of their values); when the difference's upper bound is below zero the update
is clearly worse and is rolled back automatically: the parent stays champion and the audit
table says why. The update has learned that batch, which tilts the comparison its way, so
what is rolled back is only what is worse even so. The check reads the batch's newest
``CHECK_SLICE`` decisions: enough for an interval that catches a clearly worse update, at
a cost that does not grow with the batch.

Rows decided by another policy (say a policy the campaign used before) are marked as seen
but teach nothing, unless that policy is the campaign's baseline (control group,
apprentice mode), whose logged decisions the policy learns from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import col

from engine.campaigns import Campaign
from engine.db import session_scope
from engine.learning import champions, offpolicy
from engine.learning.challengers import challenge_with_configured
from engine.learning.champions import CHAMPION, champion_policy, configured_settings
from engine.learning.logged import DECISION_COLUMNS, LoggedDecision, from_row, usable
from engine.learning.versions import REJECTED, Training, estimate_dict, last_configured, record
from engine.models import LedgerRow, RewardRow

if TYPE_CHECKING:
    from engine.app import Engine

CHECK_SLICE = 2000
"""The newest decisions of a reward batch on which an online update is checked."""


def learning_policies(campaign: Campaign) -> set[str]:
    """The policies whose logged decisions teach the campaign's policy."""
    names = {campaign.policy.name}
    if campaign.baseline is not None:
        names.add(campaign.baseline.policy_name)
    return names


def unlearned(db: SAEngine, campaign: Campaign) -> tuple[list[int], list[LoggedDecision]]:
    """Rewarded decisions the champion has not learned from yet: every such send id, and
    the decisions among them that can teach (replayed over the variants as offered)."""
    today = campaign.variant_list
    teachers = learning_policies(campaign)
    stmt = (
        select(*DECISION_COLUMNS, col(RewardRow.reward))  # not the rendered links
        .join(RewardRow, col(RewardRow.send_id) == col(LedgerRow.id))
        .where(col(RewardRow.campaign) == campaign.name)
        .where(col(RewardRow.learned_by).is_(None))
        .order_by(col(LedgerRow.id))
    )
    ids: list[int] = []
    decisions: list[LoggedDecision] = []
    with session_scope(db) as session:
        for row in session.execute(stmt).all():
            ids.append(int(row.id))
            if row.policy in teachers and usable(row):
                decision = from_row(row, row.reward, today)
                if decision.chosen in {v.key for v in decision.variants}:
                    decisions.append(decision)
    return ids, decisions


def check_update(engine: Engine, campaign: Campaign, batch: list[LoggedDecision]) -> Training:
    """Teach the champion ``batch`` and decide whether the update replaces it."""
    parent = champion_policy(engine.db, engine.policies, campaign)
    child = champion_policy(engine.db, engine.policies, campaign)
    champion = champions.champion(engine.db, campaign)
    settings = (champion.settings if champion else None) or configured_settings(campaign)
    child.learn([offpolicy.feedback_of(d) for d in batch])
    training = Training(
        kind="online",
        settings=settings,
        decision="promoted",
        reason="first model of these settings" if champion is None else "",
        role=CHAMPION,
        blob=child.save(),
        data=batch,
        n_feedback=(champion.n_feedback if champion else 0) + len(batch),
        n_eval=len(batch),
    )
    if champion is None:
        return training
    model = offpolicy.RewardModel.fit(batch)
    recent = batch[-CHECK_SLICE:]
    training.n_eval = len(recent)
    new, old = offpolicy.target_pmfs(child, recent), offpolicy.target_pmfs(parent, recent)
    diff = offpolicy.difference(recent, new, old, model)
    training.estimates = estimate_dict(
        {
            "update": offpolicy.estimates(recent, new, model)["dr"],
            "parent": offpolicy.estimates(recent, old, model)["dr"],
            "difference": diff,
        }
    )
    if diff.ci_high < 0:
        training.decision, training.role = "rolled back", REJECTED
        training.n_feedback = champion.n_feedback
        training.reason = (
            f"clearly worse than its parent {champion.version} on the new batch's newest "
            f"{len(recent)}: " + offpolicy.describe(diff)
        )
    else:
        training.reason = (
            f"online update of {champion.version}: {offpolicy.describe(diff)}, not clearly worse"
        )
    return training


def learn_online(engine: Engine, campaign: Campaign) -> str | None:
    """Feed new rewards to the champion, record the update; None when nothing is new.

    A pinned champion (``tailormail rollback``) does not learn: its rewards wait, unlearned,
    until it is released. A changed ``[policy]`` in the campaign file first gets a
    challenger with the new settings (``engine.learning.challengers``).
    """
    champion = champions.champion(engine.db, campaign)
    if champion is not None and champion.pinned:
        return None
    seen = last_configured(engine.db, campaign)
    if champion is not None and seen is not None and seen != configured_settings(campaign):
        challenge_with_configured(engine, campaign)
    ids, batch = unlearned(engine.db, campaign)
    if not ids:
        return None
    version: str | None = None
    if batch:
        version = record(engine.db, campaign, check_update(engine, campaign, batch))
    with session_scope(engine.db) as session:
        session.execute(
            update(RewardRow)
            .where(col(RewardRow.send_id).in_(ids))
            .values(learned_by=version or "-")
        )
    return version
