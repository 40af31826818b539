"""Off-policy estimators: coverage of the truth on simulated logs, and clear input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.learning import estimators as evaluation
from engine.learning.estimators import Estimate, dr, ips, snips

SEGMENTS = np.array([0.5, 0.3, 0.2])  # how often each segment occurs
# Click probability per (segment, variant): 2-10%, a different best variant per segment.
CLICK = np.array(
    [
        [0.02, 0.05, 0.03, 0.04],
        [0.08, 0.03, 0.02, 0.04],
        [0.03, 0.04, 0.10, 0.05],
    ]
)
LOGGING = np.array([[0.4, 0.2, 0.2, 0.2], [0.25, 0.25, 0.25, 0.25], [0.1, 0.3, 0.3, 0.3]])
TARGET = np.array([[0.1, 0.7, 0.1, 0.1], [0.7, 0.1, 0.1, 0.1], [0.05, 0.05, 0.85, 0.05]])
TRUE_VALUE = float(SEGMENTS @ (TARGET * CLICK).sum(axis=1))


def simulated_log(seed: int, n: int = 4000) -> dict[str, np.ndarray]:
    """``n`` logged decisions of the logging policy, with the target's probabilities and a
    reward model that is deliberately wrong (DR must stay unbiased through the weights)."""
    rng = np.random.default_rng(seed)
    segment = rng.choice(len(SEGMENTS), size=n, p=SEGMENTS)
    cumulative = LOGGING[segment].cumsum(axis=1)
    action = (rng.random(n)[:, None] > cumulative).sum(axis=1)
    reward = (rng.random(n) < CLICK[segment, action]).astype(float)
    model = CLICK * 0.7 + 0.01  # biased predictions
    return {
        "rewards": reward,
        "logged_probs": LOGGING[segment, action],
        "target_probs": TARGET[segment, action],
        "predicted_logged": model[segment, action],
        "predicted_target": (TARGET[segment] * model[segment]).sum(axis=1),
    }


def estimates(log: dict[str, np.ndarray]) -> dict[str, Estimate]:
    base = (log["rewards"], log["logged_probs"], log["target_probs"])
    return {
        "ips": ips(*base),
        "snips": snips(*base),
        "dr": dr(*base, log["predicted_logged"], log["predicted_target"]),
    }


def test_intervals_cover_the_true_value_in_at_least_90_of_100_seeds() -> None:
    covered = dict.fromkeys(evaluation.ESTIMATORS, 0)
    for seed in range(100):
        for name, estimate in estimates(simulated_log(seed)).items():
            covered[name] += estimate.ci_low <= TRUE_VALUE <= estimate.ci_high
    assert all(count >= 90 for count in covered.values()), (covered, TRUE_VALUE)


def test_estimates_are_near_the_truth_and_dr_is_tighter_than_ips() -> None:
    got = estimates(simulated_log(7, n=40_000))
    for estimate in got.values():
        assert estimate.n == 40_000
        assert abs(estimate.value - TRUE_VALUE) < 0.01
    assert got["dr"].half_width < got["ips"].half_width


def test_a_broken_weight_formula_would_miss_the_truth() -> None:
    # The logging policy's own value differs from the target's: an estimator that forgot
    # the weights would land there, far outside the interval.
    log = simulated_log(3, n=40_000)
    logging_value = float(SEGMENTS @ (LOGGING * CLICK).sum(axis=1))
    estimate = ips(log["rewards"], log["logged_probs"], log["target_probs"])
    assert not estimate.ci_low <= logging_value <= estimate.ci_high


def test_the_target_equal_to_the_logger_gives_the_plain_mean() -> None:
    rewards = [1.0, 0.0, 0.0, 1.0]
    probs = [0.5, 0.25, 0.25, 0.5]
    for estimate in (ips(rewards, probs, probs), snips(rewards, probs, probs)):
        assert estimate.value == pytest.approx(0.5)
        assert estimate.ci_low < 0.5 < estimate.ci_high


def test_snips_with_no_target_weight_is_an_unbounded_zero() -> None:
    estimate = snips([1.0, 0.0], [0.5, 0.5], [0.0, 0.0])
    assert estimate.value == 0.0 and math.isinf(estimate.ci_high)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([1.0], [0.5, 0.5], [0.5]), "differ in length"),
        (([], [], []), "empty"),
        (([1.0], [0.0], [0.5]), "logged_probs"),
        (([1.0], [0.5], [1.5]), "target_probs"),
        (([float("nan")], [0.5], [0.5]), "rewards contains a non-finite"),
    ],
)
def test_bad_inputs_are_named(args: tuple[list[float], ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ips(*args)
