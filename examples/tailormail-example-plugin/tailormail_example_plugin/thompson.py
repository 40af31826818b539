"""The ``thompson`` policy: Beta-Bernoulli Thompson sampling per variant.

Non-contextual: every variant keeps a Beta(alpha, beta) posterior over its success rate,
where a success is a reward > 0. The decision's pmf is each variant's probability of
having the highest sampled rate, estimated by Monte Carlo draws from the posteriors, so
the logged probability is the one the choice was really sampled with.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from engine import Context, Decision, Feedback, Variant
from engine.sampling import decide

FORMAT = "tailormail-thompson/1"
_SEED_SPACE = 2**64  # numpy seeds must be non-negative; fold any int into 64 bits


class ThompsonPolicy:
    """Thompson sampling over the campaign's variants, ignoring the recipient's context.

    ``prior_alpha`` and ``prior_beta`` are the Beta prior shared by every variant (1, 1 is
    uniform); ``draws`` is the number of Monte Carlo draws that estimate the pmf.
    """

    name = "thompson"

    def __init__(
        self, prior_alpha: float = 1.0, prior_beta: float = 1.0, draws: int = 2000
    ) -> None:
        for label, value in (("prior_alpha", prior_alpha), ("prior_beta", prior_beta)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"thompson policy: {label} must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"thompson policy: {label} must be > 0, got {value!r}")
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
            raise ValueError(f"thompson policy: draws must be an integer >= 1, got {draws!r}")
        self.prior_alpha = float(prior_alpha)
        self.prior_beta = float(prior_beta)
        self.draws = draws
        self.model_version: str | None = None
        self.successes: dict[str, int] = {}
        self.failures: dict[str, int] = {}

    def posterior(self, key: str) -> tuple[float, float]:
        """The Beta posterior ``(alpha, beta)`` of variant ``key``."""
        return (
            self.prior_alpha + self.successes.get(key, 0),
            self.prior_beta + self.failures.get(key, 0),
        )

    def pmf(self, keys: Sequence[str], rng: np.random.Generator) -> dict[str, float]:
        """Each variant's estimated probability of drawing the highest rate.

        One pseudo-count per variant keeps every probability above zero: the exact Thompson
        probability is always positive, and a logged probability of 0 would break IPS.
        """
        alphas = np.array([self.posterior(key)[0] for key in keys])
        betas = np.array([self.posterior(key)[1] for key in keys])
        samples = rng.beta(alphas, betas, size=(self.draws, len(keys)))
        wins = np.bincount(samples.argmax(axis=1), minlength=len(keys))
        total = self.draws + len(keys)
        return {key: (int(count) + 1) / total for key, count in zip(keys, wins, strict=True)}

    def choose(
        self, context: Context, variants: Sequence[Variant], *, seed: int | None = None
    ) -> Decision:
        """Sample a variant from the Thompson pmf; deterministic for a given ``seed``."""
        keys = [variant.key for variant in variants]
        if not keys:
            raise ValueError("thompson policy: no variants to choose from")
        if len(set(keys)) != len(keys):
            raise ValueError(f"thompson policy: duplicate variant keys in {keys!r}")
        if seed is None:
            seed = secrets.randbits(64)
        pmf = self.pmf(keys, np.random.default_rng(seed % _SEED_SPACE))
        return decide(pmf, seed, self.name, self.model_version)

    def learn(self, feedback: Iterable[Feedback]) -> None:
        """Count each logged decision as a success (reward > 0) or a failure of its variant."""
        for item in feedback:
            counts = self.successes if item.reward > 0 else self.failures
            counts[item.chosen] = counts.get(item.chosen, 0) + 1

    def save(self) -> bytes:
        """The posterior counts (and the priors, for the record) as JSON bytes."""
        state = {
            "format": FORMAT,
            "prior_alpha": self.prior_alpha,
            "prior_beta": self.prior_beta,
            "successes": self.successes,
            "failures": self.failures,
        }
        return json.dumps(state, sort_keys=True).encode()

    def load(self, data: bytes) -> None:
        """Restore the counts written by ``save``; the priors stay as configured."""
        try:
            state: Any = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"thompson policy: not a saved thompson policy ({exc})") from exc
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError("thompson policy: not a saved thompson policy")
        self.successes = {str(k): int(v) for k, v in state["successes"].items()}
        self.failures = {str(k): int(v) for k, v in state["failures"].items()}
