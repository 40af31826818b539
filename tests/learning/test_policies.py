"""The built-in policies (uniform, vw) and seeded sampling, with a real Vowpal Wabbit."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pluggy
import pytest

import engine
from engine import Context, Decision, Feedback, Policy, Variant
from engine.errors import ConfigError
from engine.hookspecs import PolicyFactory
from engine.sampling import normalize_pmf, sample_variant, seed_from_decision_id, variant_keys
from plugins.policies import uniform as uniform_plugin
from plugins.policies import vw as vw_plugin
from plugins.policies.uniform import UniformPolicy
from plugins.policies.vw import VowpalWabbitPolicy, vw_example

VARIANTS = [
    Variant("x", "Subject x", "x.html", {"tone": "warm", "length": 120}),
    Variant("y", "Subject y", "y.html", {"tone": "urgent", "length": 60}),
    Variant("z", "Subject z", "z.html", {"tone": "plain", "length": 90}),
]
# Segment a clicks best on x, segment b on y; z is never best.
CLICK_RATE = {"a": {"x": 0.6, "y": 0.2, "z": 0.1}, "b": {"x": 0.2, "y": 0.6, "z": 0.1}}


@pytest.fixture
def vw() -> Iterator[VowpalWabbitPolicy]:
    policy = VowpalWabbitPolicy(seed=1)
    yield policy
    policy.close()


def simulate(policy: Policy, decisions: int, rng: random.Random) -> list[float]:
    """Run a campaign loop with Bernoulli click rewards, learning after every batch of 50."""
    rewards: list[float] = []
    batch: list[Feedback] = []
    for i in range(decisions):
        segment = rng.choice("ab")
        context: Context = {"segment": segment}
        decision = policy.choose(context, VARIANTS, seed=seed_from_decision_id(f"run-{i}"))
        reward = 1.0 if rng.random() < CLICK_RATE[segment][decision.variant] else 0.0
        rewards.append(reward)
        batch.append(Feedback(context, VARIANTS, decision.variant, decision.probability, reward))
        if len(batch) == 50:
            policy.learn(batch)
            batch = []
    policy.learn(batch)
    return rewards


# --- sampling -------------------------------------------------------------------------


def test_sample_variant_is_deterministic_and_follows_the_pmf() -> None:
    pmf = {"x": 0.7, "y": 0.2, "z": 0.1}
    assert sample_variant(pmf, 42) == sample_variant(dict(pmf), 42)
    counts = {key: 0 for key in pmf}
    for seed in range(20_000):
        counts[sample_variant(pmf, seed)] += 1
    assert counts["x"] / 20_000 == pytest.approx(0.7, abs=0.02)
    assert counts["z"] / 20_000 == pytest.approx(0.1, abs=0.02)


def test_sample_variant_never_picks_a_zero_probability_key() -> None:
    pmf = {"x": 0.0, "y": 1.0, "z": 0.0}
    assert {sample_variant(pmf, seed) for seed in range(500)} == {"y"}


def test_normalize_pmf_rejects_bad_pmfs_saying_why() -> None:
    assert normalize_pmf({"x": 2.0, "y": 2.0}) == {"x": 0.5, "y": 0.5}
    for bad, why in (
        ({}, "cannot sample from an empty pmf"),
        ({"x": 0.0}, "every probability in the pmf is zero"),
        ({"x": -0.1, "y": 1.1}, "probability of 'x' must be finite and >= 0, got -0.1"),
        ({"x": float("nan")}, "probability of 'x' must be finite and >= 0, got nan"),
    ):
        with pytest.raises(ValueError) as error:
            normalize_pmf(bad)
        assert str(error.value) == why


def test_a_policy_without_variants_or_with_a_repeated_key_is_refused_by_name() -> None:
    with pytest.raises(ValueError) as none:
        variant_keys([], "vw")
    assert str(none.value) == "vw policy: no variants to choose from"
    with pytest.raises(ValueError) as twice:
        variant_keys(VARIANTS + VARIANTS[:1], "uniform")
    keys = [v.key for v in VARIANTS + VARIANTS[:1]]
    assert str(twice.value) == f"uniform policy: duplicate variant keys in {keys!r}"


def test_seed_from_decision_id_is_stable_across_processes() -> None:
    # A fixed value: hash() is salted per process, sha256 is not.
    assert seed_from_decision_id("run-1:recipient-7") == 0x562EB728B79A29ED
    assert seed_from_decision_id("a") == seed_from_decision_id("a")
    assert seed_from_decision_id("a") != seed_from_decision_id("b")
    assert 0 <= seed_from_decision_id("a") < 2**64


# --- uniform --------------------------------------------------------------------------


def test_uniform_pmf_and_seeded_choice() -> None:
    policy = UniformPolicy()
    decision = policy.choose({"segment": "a"}, VARIANTS, seed=7)
    assert decision.pmf == pytest.approx({"x": 1 / 3, "y": 1 / 3, "z": 1 / 3})
    assert decision.probability == pytest.approx(1 / 3)
    assert decision.policy == "uniform"
    assert {policy.choose({}, VARIANTS, seed=7).variant for _ in range(20)} == {decision.variant}
    assert {policy.choose({}, VARIANTS).variant for _ in range(200)} == {"x", "y", "z"}


def test_uniform_learn_counts_and_save_load_round_trip() -> None:
    policy = UniformPolicy()
    policy.learn([Feedback({}, VARIANTS, "x", 1 / 3, 1.0)] * 5)
    restored = UniformPolicy()
    restored.load(policy.save())
    assert restored.feedback_seen == 5
    with pytest.raises(ValueError):
        restored.load(b'{"format": "something else"}')


# --- vw -------------------------------------------------------------------------------


def test_vw_pmf_is_aligned_with_the_variants(vw: VowpalWabbitPolicy) -> None:
    decision = vw.choose({"segment": "a"}, VARIANTS, seed=3)
    assert list(decision.pmf) == ["x", "y", "z"]
    assert sum(decision.pmf.values()) == pytest.approx(1.0, abs=1e-5)
    assert decision.probability == decision.pmf[decision.variant]
    assert (decision.policy, decision.model_version) == ("vw", None)
    vw.model_version = "champion-3"
    assert vw.choose({"segment": "a"}, VARIANTS).model_version == "champion-3"


def test_vw_learns_the_best_variant_per_segment_and_beats_uniform() -> None:
    with VowpalWabbitPolicy(epsilon=0.1, seed=1) as vw:
        vw_rewards = simulate(vw, 2000, random.Random(11))
        for segment, best in (("a", "x"), ("b", "y")):
            pmf = vw.choose({"segment": segment}, VARIANTS, seed=0).pmf
            assert max(pmf, key=pmf.__getitem__) == best, (segment, pmf)
        assert vw.examples_learned == 2000
    uniform_rewards = simulate(UniformPolicy(), 2000, random.Random(11))
    vw_late, uniform_late = vw_rewards[1000:], uniform_rewards[1000:]
    assert sum(vw_late) / len(vw_late) > sum(uniform_late) / len(uniform_late) + 0.1


@pytest.mark.parametrize("exploration", ["squarecb", "epsilon", "softmax", "bag", "cover"])
def test_vw_exploration_modes_give_a_full_support_pmf(exploration: str) -> None:
    epsilon = None if exploration in ("squarecb", "softmax") else 0.2
    with VowpalWabbitPolicy(exploration=exploration, epsilon=epsilon, seed=1) as vw:
        simulate(vw, 200, random.Random(5))
        decision = vw.choose({"segment": "a"}, VARIANTS, seed=1)
        assert sum(decision.pmf.values()) == pytest.approx(1.0, abs=1e-5)
        assert all(prob > 0 for prob in decision.pmf.values())


def test_vw_seeded_choice_is_deterministic_and_survives_a_resume(
    vw: VowpalWabbitPolicy,
) -> None:
    simulate(vw, 300, random.Random(2))
    seeds = [seed_from_decision_id(f"resume-{i}") for i in range(50)]
    first = [vw.choose({"segment": "b"}, VARIANTS, seed=s).variant for s in seeds]
    assert [vw.choose({"segment": "b"}, VARIANTS, seed=s).variant for s in seeds] == first
    # A resumed run loads the same model in a fresh policy and must decide the same.
    with VowpalWabbitPolicy() as resumed:
        resumed.load(vw.save())
        assert [resumed.choose({"segment": "b"}, VARIANTS, seed=s).variant for s in seeds] == first


def test_vw_save_load_round_trip_keeps_arguments_and_predictions() -> None:
    with VowpalWabbitPolicy(exploration="softmax", lambda_=5.0, learning_rate=0.3) as vw:
        simulate(vw, 300, random.Random(4))
        data = vw.save()
        with VowpalWabbitPolicy() as restored:
            restored.load(data)
            assert restored.args == vw.args
            assert restored.examples_learned == 300
            for segment in "ab":
                expected = vw.choose({"segment": segment}, VARIANTS, seed=1).pmf
                assert restored.choose({"segment": segment}, VARIANTS, seed=1).pmf == expected
            # Both keep learning identically after the round trip.
            more = [Feedback({"segment": "a"}, VARIANTS, "z", 0.2, 1.0)] * 20
            vw.learn(more)
            restored.learn(more)
            assert restored.choose({"segment": "a"}, VARIANTS).pmf == (
                vw.choose({"segment": "a"}, VARIANTS).pmf
            )
    with VowpalWabbitPolicy() as other, pytest.raises(ValueError):
        other.load(b"not a model")


def test_vw_accepts_nested_namespaces_numbers_and_awkward_names(
    vw: VowpalWabbitPolicy,
) -> None:
    context: Context = {
        "segment": "a",
        "opens last 30d": 4,
        "score|raw": 0.25,
        "tiny": 1e-12,
        "big": 10**15,
        "is:vip": True,
        "skip": None,
        "nan": float("nan"),
        "tags": ["sale", "new in"],
        "geo": {"country": "fr", "city name": "Saint-Étienne", "lat": 45.43},
        "device | os": {"name:version": "ios 17:2", "prefs": {"dark mode": False}},
    }
    variants = [
        Variant("key with space", "s", "t.html", {"tone:x": "a|b", "nested": {"w": 1.5}}),
        Variant("key:colon|pipe", "s", "t.html", {"tone:x": "c d"}),
    ]
    shared, *actions = vw_example(context, variants)
    assert shared.startswith("shared |U ")
    assert "|U_geo " in shared and "|U_device%20%7C%20os " in shared
    assert "opens%20last%2030d:4.0" in shared and "is%3Avip=true" in shared
    assert "skip" not in shared and "nan" not in shared
    assert "key=key%20with%20space" in actions[0] and "|A_nested w:1.5" in actions[0]
    # Escaped names leave exactly one "|" per namespace.
    assert (shared.count("|"), actions[0].count("|"), actions[1].count("|")) == (3, 2, 1)
    decision = vw.choose(context, variants, seed=9)
    assert set(decision.pmf) == {"key with space", "key:colon|pipe"}
    vw.learn([Feedback(context, variants, decision.variant, decision.probability, 1.0)] * 10)
    assert vw.choose(context, variants, seed=9).pmf.keys() == decision.pmf.keys()


def test_vw_escaping_is_injective(vw: VowpalWabbitPolicy) -> None:
    # "a b" and "a_b" / "a%20b" must be different features, not collapsed by sanitizing.
    lines = [vw_example({"f": value}, VARIANTS)[0] for value in ("a b", "a_b", "a%20b")]
    assert len(set(lines)) == 3


def test_vw_rejects_bad_input_and_bad_configuration(vw: VowpalWabbitPolicy) -> None:
    with pytest.raises(ValueError):
        vw.choose({}, [])
    with pytest.raises(ValueError):
        vw.choose({}, [VARIANTS[0], VARIANTS[0]])
    with pytest.raises(ValueError):
        vw.learn([Feedback({}, VARIANTS, "nope", 0.5, 1.0)])
    with pytest.raises(ValueError):
        vw.learn([Feedback({}, VARIANTS, "x", 0.0, 1.0)])
    with pytest.raises(ConfigError, match="exploration"):
        VowpalWabbitPolicy(exploration="greedy")
    with pytest.raises(ConfigError, match="epsilon"):
        VowpalWabbitPolicy(epsilon=1.5)
    with pytest.raises(ConfigError, match="VW rejected"):
        VowpalWabbitPolicy(extra_args="--no-such-option")


def test_vw_close_finishes_the_workspace() -> None:
    policy = VowpalWabbitPolicy()
    policy.close()
    policy.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        policy.choose({}, VARIANTS)


# --- the plugin surface ---------------------------------------------------------------


def test_policies_satisfy_the_policy_protocol(vw: VowpalWabbitPolicy) -> None:
    assert isinstance(vw, Policy)
    assert isinstance(UniformPolicy(), Policy)


def registered_policies() -> dict[str, PolicyFactory]:
    """Both policy plugins registered in a fresh pluggy manager, as the engine does."""
    pm = pluggy.PluginManager(engine.hookspecs.PROJECT)
    pm.add_hookspecs(engine.hookspecs)
    pm.register(uniform_plugin, name="plugins.policies.uniform")
    pm.register(vw_plugin, name="plugins.policies.vw")
    pm.check_pending()
    found: dict[str, PolicyFactory] = {}
    register: Callable[[str, PolicyFactory], None] = found.__setitem__
    pm.hook.register_policies(register=register)
    return found


def test_policy_plugins_register_through_pluggy() -> None:
    factories = registered_policies()
    assert set(factories) == {"uniform", "vw"}
    policy = factories["vw"](epsilon=0.2)
    assert isinstance(policy.choose({"segment": "a"}, VARIANTS, seed=1), Decision)
    assert isinstance(factories["uniform"]().choose({}, VARIANTS, seed=1), Decision)


def test_engine_policy_returns_working_policies() -> None:
    vw = engine.policy("vw", epsilon=0.2)
    assert isinstance(vw, VowpalWabbitPolicy) and "--epsilon 0.2" in vw.args
    assert vw.choose({"segment": "a"}, VARIANTS, seed=1).policy == "vw"
    assert engine.policy("uniform").choose({}, VARIANTS, seed=1).policy == "uniform"


def test_vw_is_safe_to_share_between_threads(vw: VowpalWabbitPolicy) -> None:
    def worker(n: int) -> None:
        for i in range(100):
            decision = vw.choose({"segment": "ab"[i % 2]}, VARIANTS, seed=n * 1000 + i)
            feedback = Feedback({"segment": "a"}, VARIANTS, decision.variant, 0.5, 1.0)
            vw.learn([feedback])

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(worker, range(4)))
    assert vw.examples_learned == 400
