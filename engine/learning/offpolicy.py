"""Off-policy estimates of a policy's value on logged decisions, and of the difference
between two policies on the same decisions.

A candidate is scored by its pmf on each logged decision. A fixed model (a stored champion)
is asked as is; a learning candidate (new settings) is replayed progressively: it predicts
each decision before it learns from it, as it would have run. ``dr`` uses a reward model of
per-variant mean rewards (shrunk towards the overall mean), fitted on the same log.
Comparisons are paired: the per-decision difference of the two policies' DR terms, whose
mean has a 95% interval, so a decision needs the difference's lower bound above zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.learning.estimators import Estimate, dr, ips, mean_interval, snips
from engine.learning.logged import LoggedDecision
from engine.sampling import seed_from_decision_id
from engine.types import Feedback, Policy

Pmfs = list[dict[str, float]]
PRIOR_WEIGHT = 10.0
"""Pseudo-decisions at the overall mean in each variant's reward model (shrinkage)."""


def feedback_of(decision: LoggedDecision) -> Feedback:
    """The ``Feedback`` a policy learns from ``decision``."""
    return Feedback(
        context=decision.context,
        variants=decision.variants,
        chosen=decision.chosen,
        probability=decision.probability,
        reward=decision.reward,
    )


def target_pmfs(
    policy: Policy, decisions: Sequence[LoggedDecision], *, progressive: bool = False
) -> Pmfs:
    """``policy``'s pmf on every decision; ``progressive`` teaches it each one afterwards."""
    pmfs: Pmfs = []
    for decision in decisions:
        seed = seed_from_decision_id(decision.decision_id) if decision.decision_id else 0
        pmfs.append(dict(policy.choose(decision.context, decision.variants, seed=seed).pmf))
        if progressive:
            policy.learn([feedback_of(decision)])
    return pmfs


@dataclass(frozen=True)
class RewardModel:
    """Per-variant mean reward, shrunk towards the overall mean by ``PRIOR_WEIGHT``."""

    means: dict[str, float]
    overall: float

    @classmethod
    def fit(cls, decisions: Sequence[LoggedDecision]) -> RewardModel:
        """Fit on ``decisions`` (the logged action's reward per variant)."""
        overall = float(np.mean([d.reward for d in decisions])) if decisions else 0.0
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for d in decisions:
            sums[d.chosen] = sums.get(d.chosen, 0.0) + d.reward
            counts[d.chosen] = counts.get(d.chosen, 0) + 1
        means = {
            key: (sums[key] + PRIOR_WEIGHT * overall) / (counts[key] + PRIOR_WEIGHT) for key in sums
        }
        return cls(means, overall)

    def predict(self, variant: str) -> float:
        """The expected reward of ``variant``."""
        return self.means.get(variant, self.overall)

    def expected(self, pmf: dict[str, float]) -> float:
        """The expected reward under ``pmf``."""
        total = sum(pmf.values()) or 1.0
        return sum(p * self.predict(k) for k, p in pmf.items()) / total


def _columns(
    decisions: Sequence[LoggedDecision], pmfs: Pmfs, model: RewardModel
) -> dict[str, list[float]]:
    return {
        "rewards": [d.reward for d in decisions],
        "logged_probs": [d.probability for d in decisions],
        "target_probs": [
            pmf.get(d.chosen, 0.0) / (sum(pmf.values()) or 1.0)
            for d, pmf in zip(decisions, pmfs, strict=True)
        ],
        "predicted_logged": [model.predict(d.chosen) for d in decisions],
        "predicted_target": [model.expected(pmf) for pmf in pmfs],
    }


def estimates(
    decisions: Sequence[LoggedDecision], pmfs: Pmfs, model: RewardModel | None = None
) -> dict[str, Estimate]:
    """IPS, SNIPS and DR of the policy whose pmfs are ``pmfs`` on ``decisions``."""
    model = model or RewardModel.fit(decisions)
    c = _columns(decisions, pmfs, model)
    basic = (c["rewards"], c["logged_probs"], c["target_probs"])
    return {
        "ips": ips(*basic),
        "snips": snips(*basic),
        "dr": dr(*basic, c["predicted_logged"], c["predicted_target"]),
    }


def dr_terms(decisions: Sequence[LoggedDecision], pmfs: Pmfs, model: RewardModel) -> np.ndarray:
    """The per-decision DR terms whose mean is ``dr``'s estimate."""
    c = {k: np.asarray(v, dtype=np.float64) for k, v in _columns(decisions, pmfs, model).items()}
    weights = c["target_probs"] / c["logged_probs"]
    return c["predicted_target"] + weights * (c["rewards"] - c["predicted_logged"])


def difference(
    decisions: Sequence[LoggedDecision], new: Pmfs, old: Pmfs, model: RewardModel | None = None
) -> Estimate:
    """The DR estimate of (value of ``new``) - (value of ``old``), paired per decision."""
    model = model or RewardModel.fit(decisions)
    return mean_interval(dr_terms(decisions, new, model) - dr_terms(decisions, old, model))


def describe(difference: Estimate) -> str:
    """A DR difference with its interval, for audit reasons."""
    d = difference
    return f"DR difference {d.value:+.4f} (95% CI {d.ci_low:+.4f} to {d.ci_high:+.4f})"


def logged_pmfs(decisions: Sequence[LoggedDecision]) -> Pmfs:
    """The logging policy itself as a target: every importance weight is 1, so its
    estimates are the plain mean reward (the value the campaign actually earned)."""
    return [dict(d.pmf) if d.pmf else {d.chosen: 1.0} for d in decisions]


def uniform_pmfs(decisions: Sequence[LoggedDecision]) -> Pmfs:
    """A uniform split over each decision's offered variants."""
    return [{v.key: 1.0 / len(d.variants) for v in d.variants} for d in decisions]
