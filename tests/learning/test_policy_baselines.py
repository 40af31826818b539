"""The built-in baselines a bandit must beat: ``thompson`` (optionally per segment) and
``abtest`` (a uniform split until a sequential test names a winner, then the winner)."""

from __future__ import annotations

import json
import random

import pytest

import engine
from engine import Feedback, Policy, Variant
from engine.errors import ConfigError
from plugins.policies.abtest import ABTestPolicy, msprt_likelihood_ratio
from plugins.policies.thompson import ThompsonPolicy

VARIANTS = [Variant("plain", "s", "plain.html"), Variant("urgent", "s", "urgent.html")]
THREE = [*VARIANTS, Variant("digest", "s", "digest.html")]


def feedback(chosen: str, reward: float, n: int, context: dict[str, str] | None = None) -> list:
    return [Feedback(context or {}, VARIANTS, chosen, 0.5, reward) for _ in range(n)]


# --- thompson -------------------------------------------------------------------------


def test_thompson_learns_and_round_trips() -> None:
    policy = ThompsonPolicy()
    assert isinstance(policy, Policy) and policy.model_version is None
    before = policy.choose({}, VARIANTS, seed=7)
    assert before.pmf["plain"] == pytest.approx(0.5, abs=0.05)  # the same prior for both
    policy.learn(feedback("urgent", 1.0, 40) + feedback("plain", 0.0, 40))
    after = policy.choose({}, VARIANTS, seed=7)
    assert after.pmf["urgent"] > 0.95
    assert 0 < after.pmf["plain"] < 0.05  # never 0: a logged probability must stay usable
    assert policy.posterior("urgent") == (41.0, 1.0)
    assert policy.posterior("plain") == (1.0, 41.0)
    restored = ThompsonPolicy()
    restored.load(policy.save())
    assert json.loads(policy.save())["counts"] == {"*": {"plain": [0, 40], "urgent": [40, 0]}}
    assert restored.choose({}, VARIANTS, seed=7) == after  # the same pmf in any process
    chosen = [policy.choose({}, VARIANTS, seed=s).variant for s in range(200)]
    assert chosen.count("urgent") > 170  # sampled from the pmf, not argmax of one draw
    assert [policy.choose({}, VARIANTS, seed=s).variant for s in range(200)] == chosen


def test_thompson_per_segment_learns_each_segment_apart() -> None:
    policy = ThompsonPolicy(segment="device")
    policy.learn(
        feedback("urgent", 1.0, 30, {"device": "mobile"})
        + feedback("plain", 0.0, 30, {"device": "mobile"})
        + feedback("plain", 1.0, 30, {"device": "desktop"})
        + feedback("urgent", 0.0, 30, {"device": "desktop"})
    )
    mobile = policy.choose({"device": "mobile"}, VARIANTS, seed=1).pmf
    desktop = policy.choose({"device": "desktop"}, VARIANTS, seed=1).pmf
    unseen = policy.choose({"device": "tablet"}, VARIANTS, seed=1).pmf
    assert mobile["urgent"] > 0.95 and desktop["plain"] > 0.95
    assert unseen["plain"] == pytest.approx(0.5, abs=0.05)  # a new segment starts at the prior
    # Without a segment the same data cancels out.
    pooled = ThompsonPolicy()
    pooled.load(ThompsonPolicy().save())
    pooled.learn(feedback("urgent", 1.0, 30) + feedback("urgent", 0.0, 30))
    pooled.learn(feedback("plain", 1.0, 30) + feedback("plain", 0.0, 30))
    assert pooled.choose({}, VARIANTS, seed=1).pmf["plain"] == pytest.approx(0.5, abs=0.1)
    # A model saved with another segmentation is not mixed into this one.
    other = ThompsonPolicy(segment=["device", "age"])
    other.load(policy.save())
    assert other.counts == {}


def test_thompson_rejects_bad_parameters_and_data() -> None:
    with pytest.raises(ConfigError, match="prior_alpha"):
        ThompsonPolicy(prior_alpha=0)
    with pytest.raises(ConfigError, match="prior_beta"):
        ThompsonPolicy(prior_beta="1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="segment"):
        ThompsonPolicy(segment=[""])
    with pytest.raises(ValueError, match="no variants"):
        ThompsonPolicy().choose({}, [], seed=1)
    with pytest.raises(ValueError, match="not a saved thompson policy"):
        ThompsonPolicy().load(b'{"format": "tailormail-uniform/1"}')
    assert ThompsonPolicy().choose({}, VARIANTS).variant in {"plain", "urgent"}


# --- abtest ---------------------------------------------------------------------------


def test_msprt_ratio_grows_with_evidence_and_ignores_no_difference() -> None:
    assert msprt_likelihood_ratio(0.05, 1000, 0.05, 1000, 0.01) < 1
    small = msprt_likelihood_ratio(0.06, 1000, 0.04, 1000, 0.01)
    large = msprt_likelihood_ratio(0.06, 20000, 0.04, 20000, 0.01)
    assert small < 20 < large
    assert msprt_likelihood_ratio(0.0, 100, 0.0, 100, 0.01) == 1.0  # no variation yet


def simulate_abtest(policy: ABTestPolicy, rates: dict[str, float], days: int, seed: int) -> None:
    """``days`` batches of 1000 decisions, learning after each (rewards are delayed)."""
    rng = random.Random(seed)
    for day in range(days):
        batch = []
        for i in range(1000):
            decision = policy.choose({}, THREE, seed=day * 10_000 + i)
            clicked = rng.random() < rates[decision.variant]
            batch.append(
                Feedback({}, THREE, decision.variant, decision.probability, float(clicked))
            )
        policy.learn(batch)


def test_abtest_splits_uniformly_then_exploits_its_winner_with_exploration() -> None:
    policy = ABTestPolicy()
    assert policy.choose({}, THREE, seed=1).pmf == pytest.approx(
        dict.fromkeys(["plain", "urgent", "digest"], 1 / 3)
    )
    simulate_abtest(policy, {"plain": 0.03, "urgent": 0.06, "digest": 0.035}, 40, seed=3)
    assert policy.winner == "urgent"
    assert policy.decided_after is not None and policy.decided_after < 40_000
    pmf = policy.choose({"anything": "at all"}, THREE, seed=1).pmf
    assert pmf == pytest.approx({"plain": 0.1 / 3, "urgent": 0.9 + 0.1 / 3, "digest": 0.1 / 3})
    restored = ABTestPolicy()
    restored.load(policy.save())
    assert (restored.winner, restored.decided_after) == ("urgent", policy.decided_after)
    assert restored.choose({}, THREE, seed=5) == policy.choose({}, THREE, seed=5)


@pytest.mark.parametrize("seed", range(5))
def test_abtest_names_no_winner_among_equal_variants(seed: int) -> None:
    policy = ABTestPolicy()
    simulate_abtest(policy, dict.fromkeys(["plain", "urgent", "digest"], 0.04), 30, seed)
    assert policy.winner is None
    assert all(p > 0.05 / 2 for p in policy.p_values.values())


def test_abtest_rejects_bad_parameters() -> None:
    for bad in (
        {"confidence": 1.0},
        {"confidence": "high"},
        {"explore": -0.1},
        {"mixing_sd": 0},
        {"min_trials": 0},
    ):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            ABTestPolicy(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a saved abtest policy"):
        ABTestPolicy().load(b"{}")


def test_builtin_baselines_are_registered() -> None:
    assert isinstance(engine.policy("thompson", segment="device"), ThompsonPolicy)
    assert isinstance(engine.policy("abtest", confidence=0.99), ABTestPolicy)


def test_abtest_drops_a_clear_loser_while_two_leaders_stay_tied() -> None:
    policy = ABTestPolicy()
    simulate_abtest(policy, {"plain": 0.02, "urgent": 0.06, "digest": 0.06}, 30, seed=4)
    assert policy.winner is None and set(policy.dropped) == {"plain"}
    pmf = policy.choose({}, THREE, seed=1).pmf
    share = 0.1 / 3
    assert pmf == pytest.approx({"plain": share, "urgent": 0.45 + share, "digest": 0.45 + share})
    restored = ABTestPolicy()
    restored.load(policy.save())
    assert restored.dropped == policy.dropped
