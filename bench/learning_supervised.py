"""Supervised to bandit: scikit-learn's digits as a contextual bandit, two ways.

Each image is a context (64 pixel intensities), the ten digits are the variants, and the
reward is 1 for the right digit. One pass, learning after every example, through
``engine.policy("vw")`` (the Policy API: feature encoding, floors, seeded sampling,
``Feedback``) and through a plain ``vowpalwabbit.Workspace`` loop with the same VW
arguments and the same probability floor. Both draw their choice from the same seeded
uniform numbers, so a difference in accuracy is a difference in what the model learned.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import vowpalwabbit

from engine import Feedback, Variant
from plugins.policies.vw import VowpalWabbitPolicy

CLASSES = 10
PASSES = 5  # five shuffles of the data; accuracy over all of them, speed of the fastest


def _digits(seed: int) -> list[tuple[list[float], int]]:
    from sklearn.datasets import load_digits  # ships with scikit-learn: no download

    images, labels = load_digits(return_X_y=True)
    data = [
        ([float(v) / 16.0 for v in row], int(label))
        for row, label in zip(images, labels, strict=True)
    ]
    random.Random(seed).shuffle(data)
    return data


def _via_policy(
    data: Sequence[tuple[list[float], int]], seeds: Sequence[int], params: dict[str, Any]
) -> tuple[int, float, str]:
    variants = [Variant(f"d{k}", "", "", {}) for k in range(CLASSES)]
    correct = 0
    with VowpalWabbitPolicy(**params) as policy:
        start = time.perf_counter()
        for (pixels, label), seed in zip(data, seeds, strict=True):
            context = {f"p{j}": v for j, v in enumerate(pixels) if v}
            decision = policy.choose(context, variants, seed=seed)
            reward = 1.0 if decision.variant == f"d{label}" else 0.0
            correct += int(reward)
            logged = Feedback(context, variants, decision.variant, decision.probability, reward)
            policy.learn([logged])
        return correct, time.perf_counter() - start, policy.args


def _via_plain_vw(
    data: Sequence[tuple[list[float], int]], seeds: Sequence[int], args: str, floor: float
) -> tuple[int, float]:
    workspace = vowpalwabbit.Workspace(args)
    actions = [f"|A key=d{k}" for k in range(CLASSES)]
    correct = 0
    start = time.perf_counter()
    for (pixels, label), seed in zip(data, seeds, strict=True):
        shared = "shared |U " + " ".join(f"p{j}:{v!r}" for j, v in enumerate(pixels) if v)
        scores = workspace.predict([shared, *actions])
        pmf = [floor + (1.0 - CLASSES * floor) * p for p in scores]
        target, cumulative, choice = random.Random(seed).random() * sum(pmf), 0.0, 0
        for choice, p in enumerate(pmf):  # noqa: B007 - the loop variable is the answer
            cumulative += p
            if target < cumulative:
                break
        cost = -1.0 if choice == label else 0.0
        correct += int(choice == label)
        labelled = list(actions)
        labelled[choice] = f"0:{cost!r}:{pmf[choice]!r} {actions[choice]}"
        workspace.learn([shared, *labelled])
    elapsed = time.perf_counter() - start
    workspace.finish()
    return correct, elapsed


def supervised_check(seed: int = 1) -> dict[str, float]:
    """Accuracy of both loops over ``PASSES`` one-pass runs, and the speed ratio of their
    fastest passes (the pass least disturbed by other work on a shared machine)."""
    params: dict[str, Any] = {"seed": seed, "new_variant_examples": 0}  # defaults otherwise
    correct_of = {"policy": 0, "plain": 0}
    fastest = {"policy": float("inf"), "plain": float("inf")}
    examples = 0
    for run in range(PASSES):
        data = _digits(seed + run)
        seeds = [random.Random(f"{seed}:{run}:{i}").getrandbits(64) for i in range(len(data))]
        correct, seconds, args = _via_policy(data, seeds, params)
        floor = VowpalWabbitPolicy.__init__.__kwdefaults__["min_probability"]  # type: ignore[index]
        plain_correct, plain_seconds = _via_plain_vw(data, seeds, args, floor)
        for loop, hits, elapsed in (
            ("policy", correct, seconds),
            ("plain", plain_correct, plain_seconds),
        ):
            correct_of[loop] += hits
            fastest[loop] = min(fastest[loop], elapsed / len(data))
        examples += len(data)
    return {
        "examples": float(examples),
        "policy_accuracy": correct_of["policy"] / examples,
        "reference_accuracy": correct_of["plain"] / examples,
        "policy_examples_per_second": 1.0 / fastest["policy"],
        "reference_examples_per_second": 1.0 / fastest["plain"],
        "speed_ratio": fastest["plain"] / fastest["policy"],
    }
