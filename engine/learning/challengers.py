"""Challengers: models with other settings, trained from the ledger and promoted only when
off-policy evaluation shows them better than the champion.

The search, in the spirit of Azure Personalizer's offline optimization, is small and
documented: each entry of the policy's ``search_space`` class attribute (for ``vw``:
exploration, its amount, learning rate, interactions and ``cb_type``) is applied alone to
the champion's settings. Every candidate and the champion's
own settings are trained from scratch on the same older decisions and evaluated on the
most recent held-out slice (``HOLDOUT_SHARE`` of the rewarded decisions): the stored
champion has already learned from that slice, so only a retrained one compares fairly. A
candidate is promoted only when the lower bound of its paired DR difference against the
champion's settings is above zero; the best lower bound wins. The promoted model is then
trained on all of those decisions. Every candidate gets an audit row, promoted or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.campaigns import Campaign
from engine.errors import TailormailError
from engine.learning import champions, offpolicy
from engine.learning.champions import CHAMPION, build_policy, configured_settings
from engine.learning.estimators import Estimate
from engine.learning.logged import LoggedDecision, from_ledger
from engine.learning.versions import REJECTED, Training, estimate_dict, mark_learned, record

if TYPE_CHECKING:
    from engine.app import Engine

HOLDOUT_SHARE = 0.2
MIN_DECISIONS = 100
"""Fewer rewarded decisions than this cannot tell settings apart: nothing is trained."""
TRAIN_WINDOW = 100_000
"""Challengers learn from the newest this many rewarded decisions (memory stays bounded)."""


@dataclass
class Outcome:
    """One candidate's evaluation on the held-out slice."""

    settings: dict[str, Any]
    estimate: Estimate
    difference: Estimate
    version: str = ""
    promoted: bool = False


@dataclass
class TrainReport:
    """What ``train_challengers`` did: the champion's baseline and each candidate."""

    campaign: str
    skipped: str = ""
    n_train: int = 0
    n_holdout: int = 0
    baseline: Estimate | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    promoted: str | None = None


def search_settings(engine: Engine, base: dict[str, Any]) -> list[dict[str, Any]]:
    """The candidates: ``base`` with each entry of the policy's ``search_space`` (a
    sequence of parameter overrides) applied alone; an entry that changes nothing, or
    makes settings the policy refuses (squarecb with cb_type dr, say), is left out."""
    factory = engine.policies.get(str(base["name"]))
    space: Sequence[dict[str, Any]] = getattr(factory, "search_space", None) or ()
    params = dict(base.get("params") or {})
    candidates = []
    for override in space:
        changed = params | dict(override)
        if changed == params:
            continue
        try:
            factory(**changed)
        except (TailormailError, TypeError, ValueError):
            continue
        candidates.append({"name": base["name"], "params": changed})
    return candidates


def _trained(engine: Engine, settings: dict[str, Any], data: Sequence[LoggedDecision]) -> Any:
    policy = build_policy(engine.policies, settings)
    policy.learn([offpolicy.feedback_of(d) for d in data])
    return policy


def _describe(settings: dict[str, Any], base: dict[str, Any]) -> str:
    params, old = settings.get("params") or {}, base.get("params") or {}
    changed = {k: v for k, v in params.items() if old.get(k) != v}
    return ", ".join(f"{k}={v!r}" for k, v in changed.items()) or "the same settings"


def train_challengers(
    engine: Engine,
    campaign: Campaign,
    candidates: Sequence[dict[str, Any]] | None = None,
    *,
    kind: str = "challenger",
) -> TrainReport:
    """Train ``candidates`` (default: the documented search), evaluate each against the
    champion's settings on the newest held-out slice, promote at most one."""
    report = TrainReport(campaign.name)
    champion = champions.champion(engine.db, campaign)
    if champion is not None and champion.pinned:
        report.skipped = f"champion {champion.version} is pinned by a rollback; release it first"
        return report
    base = (champion.settings if champion else None) or configured_settings(campaign)
    if candidates is None:
        candidates = search_settings(engine, base)
        if not candidates:
            report.skipped = f"the {base['name']!r} policy lists no settings to search"
            return report
    decisions = from_ledger(engine, campaign.name, newest=TRAIN_WINDOW)
    if len(decisions) < MIN_DECISIONS:
        report.skipped = f"{len(decisions)} rewarded decisions; training needs {MIN_DECISIONS}"
        return report
    cut = len(decisions) - max(1, int(len(decisions) * HOLDOUT_SHARE))
    train, holdout = decisions[:cut], decisions[cut:]
    report.n_train, report.n_holdout = len(train), len(holdout)
    model = offpolicy.RewardModel.fit(train)
    reference = offpolicy.target_pmfs(_trained(engine, base, train), holdout)
    report.baseline = offpolicy.estimates(holdout, reference, model)["dr"]
    for settings in candidates:
        pmfs = offpolicy.target_pmfs(_trained(engine, settings, train), holdout)
        report.outcomes.append(
            Outcome(
                settings=dict(settings),
                estimate=offpolicy.estimates(holdout, pmfs, model)["dr"],
                difference=offpolicy.difference(holdout, pmfs, reference, model),
            )
        )
    better = [o for o in report.outcomes if o.difference.ci_low > 0]
    winner = max(better, key=lambda o: o.difference.ci_low) if better else None
    for outcome in report.outcomes:
        diff = outcome.difference
        figures = offpolicy.describe(diff)
        changed = _describe(outcome.settings, base)
        training = Training(
            kind=kind,
            settings=outcome.settings,
            decision="not promoted",
            reason=f"{changed}: {figures}; the lower bound is not above zero",
            role=REJECTED,
            data=holdout,
            n_eval=len(holdout),
            estimates=estimate_dict(
                {"challenger": outcome.estimate, "champion": report.baseline, "difference": diff}
            ),
        )
        if outcome is winner:
            policy = _trained(engine, outcome.settings, decisions)
            training.decision, training.role, training.blob = "promoted", CHAMPION, policy.save()
            training.reason = f"{changed}: {figures}; better than the champion's settings"
            training.data, training.n_feedback = decisions, len(decisions)
        elif better:
            training.reason = f"{changed}: {figures}; another challenger did better"
        outcome.version = record(engine.db, campaign, training)
        if outcome is winner:
            outcome.promoted, report.promoted = True, outcome.version
            last = max(d.ledger_id or 0 for d in decisions)
            mark_learned(engine.db, campaign, last, outcome.version)
    return report


def challenge_with_configured(engine: Engine, campaign: Campaign) -> TrainReport:
    """The campaign file's ``[policy]`` changed: its settings become a challenger.

    With too little data to evaluate, the new settings take over (nothing to lose yet).
    """
    settings = configured_settings(campaign)
    report = train_challengers(engine, campaign, [settings], kind="settings")
    if report.skipped and not report.skipped.startswith("champion"):
        decisions = from_ledger(engine, campaign.name, newest=TRAIN_WINDOW)
        policy = _trained(engine, settings, decisions)
        version = record(
            engine.db,
            campaign,
            Training(
                kind="settings",
                settings=settings,
                decision="promoted",
                reason=f"the campaign file's settings changed; {report.skipped}, so they "
                "take over untested",
                role=CHAMPION,
                blob=policy.save(),
                data=decisions,
                n_feedback=len(decisions),
            ),
        )
        if decisions:
            mark_learned(engine.db, campaign, max(d.ledger_id or 0 for d in decisions), version)
        report.promoted = version
    return report
