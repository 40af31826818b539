"""Seeded sampling from a policy's pmf, so a resumed campaign run makes the same choices."""

from __future__ import annotations

import hashlib
import math
import random
import secrets
from collections.abc import Mapping, Sequence

from engine.types import Decision, Variant


def variant_keys(variants: Sequence[Variant], policy: str) -> list[str]:
    """The keys of the variants a policy is asked to choose from, in order.

    Raises ``ValueError`` naming ``policy`` when there are none or a key repeats.
    """
    keys = [variant.key for variant in variants]
    if not keys:
        raise ValueError(f"{policy} policy: no variants to choose from")
    if len(set(keys)) != len(keys):
        raise ValueError(f"{policy} policy: duplicate variant keys in {keys!r}")
    return keys


def normalize_pmf(pmf: Mapping[str, float]) -> dict[str, float]:
    """Return ``pmf`` scaled to sum to 1, keeping the keys' insertion order.

    Raises ``ValueError`` on an empty pmf, a negative or non-finite probability, or a
    pmf whose probabilities are all zero.
    """
    if not pmf:
        raise ValueError("cannot sample from an empty pmf")
    for key, prob in pmf.items():
        if not math.isfinite(prob) or prob < 0:
            raise ValueError(f"probability of {key!r} must be finite and >= 0, got {prob!r}")
    total = math.fsum(pmf.values())
    if total <= 0:
        raise ValueError("every probability in the pmf is zero")
    return {key: prob / total for key, prob in pmf.items()}


def sample_variant(pmf: Mapping[str, float], seed: int) -> str:
    """Draw one key of ``pmf`` with its probability, deterministically for ``seed``.

    The same pmf (same keys in the same insertion order) and seed always give the same key,
    in any process. The pmf need not sum exactly to 1 (policies return float32 values).
    """
    probabilities = normalize_pmf(pmf)
    target = random.Random(seed).random()
    cumulative = 0.0
    chosen: str | None = None
    for key, prob in probabilities.items():
        if prob <= 0:
            continue
        chosen = key
        cumulative += prob
        if target < cumulative:
            return key
    # Rounding can leave the cumulative sum a hair under 1: the last possible key wins.
    assert chosen is not None  # normalize_pmf guarantees one positive probability
    return chosen


def seed_from_decision_id(decision_id: str) -> int:
    """A 64-bit sampling seed derived from a decision id, stable across processes.

    Uses the first 8 bytes of the id's SHA-256 (``hash()`` is salted per process).
    """
    digest = hashlib.sha256(decision_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def decide(
    pmf: Mapping[str, float], seed: int | None, policy: str, model_version: str | None
) -> Decision:
    """Sample ``pmf`` (seeded, or at random when ``seed`` is None) into a ``Decision``.

    Every policy ends the same way: the chosen key, its probability and the whole pmf.
    """
    chosen = sample_variant(pmf, secrets.randbits(64) if seed is None else seed)
    return Decision(
        variant=chosen,
        probability=float(pmf[chosen]),
        pmf=dict(pmf),
        policy=policy,
        model_version=model_version,
    )
