"""Every ``vw`` exploration setting reaches Vowpal Wabbit: it shows in the VW arguments and
in the shape of the pmf the policy returns (epsilon-greedy has a shape of its own).

Each policy is trained on the same seeded click stream (segment a clicks x, segment b
clicks y), then asked about segments a, b and an unseen segment c.
"""

from __future__ import annotations

import random
import shlex

import pytest

from engine import Feedback, Variant
from engine.errors import ConfigError
from plugins.policies.vw import VowpalWabbitPolicy, floored

VARIANTS = [
    Variant("x", "s", "x.html", {"tone": "warm"}),
    Variant("y", "s", "y.html", {"tone": "urgent"}),
    Variant("z", "s", "z.html", {"tone": "plain"}),
]
K = len(VARIANTS)
CLICK_RATE = {"a": {"x": 0.6, "y": 0.2, "z": 0.1}, "b": {"x": 0.2, "y": 0.6, "z": 0.1}}


def trained(**params: object) -> VowpalWabbitPolicy:
    """A vw policy with ``params`` after 300 seeded decisions, learning every 50.

    The probability floors are off unless asked for, so the pmf is VW's own.
    """
    params = {"min_probability": 0.0, "new_variant_examples": 0} | params
    policy = VowpalWabbitPolicy(seed=1, **params)  # type: ignore[arg-type]
    rng = random.Random(5)
    batch: list[Feedback] = []
    for i in range(300):
        segment = rng.choice("ab")
        decision = policy.choose({"segment": segment}, VARIANTS, seed=i)
        reward = 1.0 if rng.random() < CLICK_RATE[segment][decision.variant] else 0.0
        batch.append(
            Feedback({"segment": segment}, VARIANTS, decision.variant, decision.probability, reward)
        )
        if len(batch) == 50:
            policy.learn(batch)
            batch = []
    return policy


def pmfs(policy: VowpalWabbitPolicy) -> dict[str, list[float]]:
    """The pmf (in variant order) for segments a, b and the unseen c."""
    return {
        segment: list(policy.choose({"segment": segment}, VARIANTS, seed=0).pmf.values())
        for segment in "abc"
    }


def epsilon_greedy_shaped(pmf: list[float], epsilon: float) -> bool:
    """True when ``pmf`` is one greedy arm plus ``epsilon`` spread evenly over all arms."""
    expected = sorted([epsilon / K] * (K - 1) + [1 - epsilon + epsilon / K])
    return sorted(pmf) == pytest.approx(expected, abs=1e-4)


def option(policy: VowpalWabbitPolicy, name: str) -> str | None:
    """The value given to ``--name`` in the policy's VW arguments ("" for a bare flag)."""
    args = shlex.split(policy.args)
    if f"--{name}" not in args:
        return None
    index = args.index(f"--{name}")
    value = args[index + 1] if index + 1 < len(args) else ""
    return "" if value.startswith("--") else value


def test_epsilon_greedy_spreads_epsilon_evenly() -> None:
    with trained(exploration="epsilon", epsilon=0.2) as policy:
        assert float(option(policy, "epsilon") or "nan") == 0.2
        assert all(option(policy, name) is None for name in ("softmax", "bag", "cover"))
        shapes = pmfs(policy)
        assert epsilon_greedy_shaped(shapes["a"], 0.2) and shapes["a"][0] > 0.8
        assert epsilon_greedy_shaped(shapes["b"], 0.2) and shapes["b"][1] > 0.8


def test_softmax_follows_lambda() -> None:
    with (
        trained(exploration="softmax", lambda_=0.0) as flat,
        trained(exploration="softmax", lambda_=1.0) as soft,
        trained(exploration="softmax", lambda_=10.0) as sharp,
    ):
        for policy, value in ((flat, 0.0), (soft, 1.0), (sharp, 10.0)):
            assert option(policy, "softmax") == ""
            assert float(option(policy, "lambda") or "nan") == value
            assert option(policy, "epsilon") is None
        # lambda 0 ignores the scores entirely: uniform, however much was learned.
        assert all(p == pytest.approx([1 / K] * K, abs=1e-4) for p in pmfs(flat).values())
        # A small lambda gives every arm its own probability, ordered by the scores.
        gentle = pmfs(soft)["a"]
        assert len({round(p, 4) for p in gentle}) == K and not epsilon_greedy_shaped(gentle, 0.1)
        assert gentle.index(max(gentle)) == 0
        # A larger lambda is greedier on the same data.
        assert max(pmfs(sharp)["a"]) > max(gentle) + 0.3


@pytest.mark.parametrize("size", [2, 5])
def test_bagging_votes_in_steps_of_one_over_the_ensemble_size(size: int) -> None:
    # VW's own settings (mtr, rate 0.5): the bags of a gentler regression agree too soon.
    settings = {"learning_rate": None, "cb_type": "mtr"}
    with trained(exploration="bag", ensemble_size=size, epsilon=0.0, **settings) as policy:
        assert option(policy, "bag") == str(size)
        assert float(option(policy, "epsilon") or "nan") == 0.0
        shapes = pmfs(policy)
        for pmf in shapes.values():
            assert all(p * size == pytest.approx(round(p * size), abs=1e-4) for p in pmf), pmf
        # The bags disagree about the unseen segment: a split vote, not one greedy arm.
        assert 0 < max(shapes["c"]) < 1, shapes["c"]


def test_bagging_and_cover_depend_on_the_ensemble_size() -> None:
    for exploration in ("bag", "cover"):
        with (
            trained(exploration=exploration, ensemble_size=3, epsilon=0.2) as small,
            trained(exploration=exploration, ensemble_size=6, epsilon=0.2) as large,
        ):
            assert (option(small, exploration), option(large, exploration)) == ("3", "6")
            assert pmfs(small) != pmfs(large), exploration


def test_cover_is_not_epsilon_greedy() -> None:
    with trained(exploration="cover", ensemble_size=3, epsilon=0.2) as policy:
        assert option(policy, "cover") == "3"
        assert float(option(policy, "epsilon") or "nan") == 0.2
        shapes = pmfs(policy)
        assert not all(epsilon_greedy_shaped(pmf, 0.2) for pmf in shapes.values()), shapes
        assert all(sum(pmf) == pytest.approx(1.0, abs=1e-5) for pmf in shapes.values())


def test_the_defaults_are_epsilon_greedy_over_a_direct_method_regression() -> None:
    with VowpalWabbitPolicy() as policy:
        assert option(policy, "epsilon") == "0.05" and option(policy, "cb_type") == "dm"
        assert option(policy, "learning_rate") == "0.1" and option(policy, "squarecb") is None
        assert (policy.min_probability, policy.new_variant_examples) == (0.01, 100)


def test_squarecb_follows_gamma_scale() -> None:
    with (
        trained(exploration="squarecb") as gentle_policy,
        trained(exploration="squarecb", gamma_scale=1000.0) as greedy,
    ):
        assert option(gentle_policy, "squarecb") == "" and option(gentle_policy, "epsilon") is None
        assert option(gentle_policy, "cb_type") == "mtr"  # the only one squarecb takes
        assert float(option(gentle_policy, "gamma_scale") or "nan") == 10.0
        gentle, sharp = pmfs(gentle_policy)["a"], pmfs(greedy)["a"]
        assert gentle.index(max(gentle)) == 0 and sharp.index(max(sharp)) == 0
        assert max(sharp) > max(gentle)  # a larger gamma exploits more
        assert not epsilon_greedy_shaped(gentle, 0.05)


def test_bad_exploration_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match="epsilon has no effect"):
        VowpalWabbitPolicy(exploration="squarecb", epsilon=0.1)
    with pytest.raises(ConfigError, match="cb_type"):
        VowpalWabbitPolicy(exploration="squarecb", cb_type="dm")  # it regresses with mtr only
    with pytest.raises(ConfigError, match="cb_type"):
        VowpalWabbitPolicy(cb_type="magic")
    with pytest.raises(ConfigError, match="power_t"):
        VowpalWabbitPolicy(power_t=2)
    with pytest.raises(ConfigError, match="min_probability"):
        VowpalWabbitPolicy(min_probability=-0.1)
    with VowpalWabbitPolicy(exploration="cover", cb_type="dr", power_t=0.0) as cover:
        assert (option(cover, "cb_type"), option(cover, "power_t")) == ("dr", "0.0")


def test_min_probability_floors_every_variant() -> None:
    with trained(exploration="epsilon", epsilon=0.0, min_probability=0.05) as policy:
        for pmf in pmfs(policy).values():
            assert min(pmf) == pytest.approx(0.05, abs=1e-6)
            assert sum(pmf) == pytest.approx(1.0)
        decision = policy.choose({"segment": "a"}, VARIANTS, seed=3)
        assert decision.probability == decision.pmf[decision.variant]  # what was sampled
    assert floored({"x": 1.0, "y": 0.0}, {"x": 0.1, "y": 0.1}) == pytest.approx(
        {"x": 0.9, "y": 0.1}
    )


def test_a_variant_added_to_a_running_campaign_is_explored() -> None:
    with trained(exploration="epsilon", epsilon=0.0, new_variant_examples=50) as policy:
        newcomer = Variant("w", "s", "w.html", {"tone": "bold"})
        offered = [*VARIANTS, newcomer]
        pmf = policy.choose({"segment": "a"}, offered, seed=0).pmf
        assert pmf["w"] >= 0.5 / len(offered) - 1e-9  # half its uniform share, not ~0
        chosen = [policy.choose({"segment": "a"}, offered, seed=s).variant for s in range(400)]
        assert chosen.count("w") > 40
        # Once it was chosen in enough learned decisions, the model alone decides.
        policy.learn([Feedback({"segment": "a"}, offered, "w", 0.125, 0.0)] * 50)
        assert policy.chosen_counts["w"] == 50
        settled = policy.choose({"segment": "a"}, offered, seed=0).pmf
        assert settled["w"] < 0.05
        with VowpalWabbitPolicy() as restored:
            restored.load(policy.save())
            assert restored.chosen_counts == policy.chosen_counts
