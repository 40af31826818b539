"""Off-policy estimators: what a target policy would have earned on logged decisions.

Each estimator takes array-likes of equal length, one entry per logged decision: the
reward observed, the logging policy's probability of the logged action, and the target
policy's probability of that same action (``dr`` adds a reward model's prediction for the
logged action and its expectation under the target policy). Each returns an ``Estimate``
with a 95% normal-approximation interval from the per-decision terms' sample variance
(the delta method for the self-normalized ratio of ``snips``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Z95 = 1.959963984540054  # the two-sided 95% quantile of the standard normal
ArrayLike = Sequence[float] | npt.NDArray[Any]


@dataclass(frozen=True)
class Estimate:
    """An estimated policy value with its 95% confidence interval and sample size."""

    value: float
    ci_low: float
    ci_high: float
    n: int

    @property
    def half_width(self) -> float:
        """Half the interval's width: the estimate's margin of error."""
        return (self.ci_high - self.ci_low) / 2.0

    def as_dict(self) -> dict[str, float | int]:
        """The estimate as a plain dict (for JSON and the audit table)."""
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n}


def _arrays(**named: ArrayLike) -> dict[str, npt.NDArray[np.float64]]:
    """``named`` as float arrays of one common, non-zero length; errors name the argument."""
    arrays = {
        name: np.asarray(values, dtype=np.float64).reshape(-1) for name, values in named.items()
    }
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"estimator inputs differ in length: {lengths}")
    if not next(iter(lengths.values())):
        raise ValueError("estimator inputs are empty: no logged decisions to evaluate")
    for name, array in arrays.items():
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} contains a non-finite value")
    logged = arrays["logged_probs"]
    if np.any(logged <= 0) or np.any(logged > 1):
        raise ValueError("logged_probs must all be in (0, 1]")
    target = arrays["target_probs"]
    if np.any(target < 0) or np.any(target > 1):
        raise ValueError("target_probs must all be in [0, 1]")
    return arrays


def mean_interval(terms: npt.NDArray[np.float64]) -> Estimate:
    """The mean of per-decision ``terms`` with a normal 95% interval (for paired
    differences of two policies' terms too)."""
    n = len(terms)
    value = float(terms.mean())
    stderr = float(terms.std(ddof=1)) / math.sqrt(n) if n > 1 else math.inf
    return Estimate(value, value - Z95 * stderr, value + Z95 * stderr, n)


def ips(rewards: ArrayLike, logged_probs: ArrayLike, target_probs: ArrayLike) -> Estimate:
    """Inverse propensity scoring: the mean of ``reward * target / logged``.

    Unbiased whenever the logging policy gave every action the target may take a
    positive probability; its variance grows with the importance weights.
    """
    a = _arrays(rewards=rewards, logged_probs=logged_probs, target_probs=target_probs)
    return mean_interval(a["rewards"] * a["target_probs"] / a["logged_probs"])


def snips(rewards: ArrayLike, logged_probs: ArrayLike, target_probs: ArrayLike) -> Estimate:
    """Self-normalized IPS: ``sum(w * r) / sum(w)`` with ``w = target / logged``.

    Slightly biased, much lower variance than IPS; the interval is the delta method's.
    When no logged action has target weight, the estimate is 0 with an infinite interval.
    """
    a = _arrays(rewards=rewards, logged_probs=logged_probs, target_probs=target_probs)
    weights = a["target_probs"] / a["logged_probs"]
    n = len(weights)
    mean_weight = float(weights.mean())
    if mean_weight == 0:
        return Estimate(0.0, -math.inf, math.inf, n)
    value = float((weights * a["rewards"]).sum() / weights.sum())
    residuals = weights * (a["rewards"] - value) / mean_weight
    stderr = float(np.sqrt((residuals**2).sum() / (n - 1)) / math.sqrt(n)) if n > 1 else math.inf
    return Estimate(value, value - Z95 * stderr, value + Z95 * stderr, n)


def dr(
    rewards: ArrayLike,
    logged_probs: ArrayLike,
    target_probs: ArrayLike,
    predicted_logged: ArrayLike,
    predicted_target: ArrayLike,
) -> Estimate:
    """Doubly robust: the reward model's value under the target, corrected by IPS on its
    residuals: the mean of ``predicted_target + w * (reward - predicted_logged)``.

    ``predicted_logged`` is the model's prediction for the logged action and
    ``predicted_target`` its expectation over the target policy's pmf for that decision.
    Unbiased when either the logged probabilities or the reward model are right.
    """
    a = _arrays(
        rewards=rewards,
        logged_probs=logged_probs,
        target_probs=target_probs,
        predicted_logged=predicted_logged,
        predicted_target=predicted_target,
    )
    weights = a["target_probs"] / a["logged_probs"]
    terms = a["predicted_target"] + weights * (a["rewards"] - a["predicted_logged"])
    return mean_interval(terms)


ESTIMATORS = ("ips", "snips", "dr")
