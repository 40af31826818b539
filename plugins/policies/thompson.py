"""The ``thompson`` policy: Beta-Bernoulli Thompson sampling per variant, optionally per segment.

Every variant keeps a Beta(alpha, beta) posterior over its success rate (a success is a
reward > 0). With ``segment`` (one context feature name, or a list of them) each value of
the segment keeps posteriors of its own, so ``segment = "device"`` learns mobile and
desktop apart; without it the policy ignores the context, like a classic A/B bandit.

The pmf is each variant's probability of drawing the highest rate, estimated by Monte
Carlo draws seeded by the posterior itself: the same model gives the same pmf in every
process, and the pmf is computed once per segment between two learning batches.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence

from engine import Context, Decision, Feedback, Variant, hookimpl
from engine.errors import ConfigError
from engine.hookspecs import PolicyFactory
from engine.policy_state import dump_state, load_state
from engine.sampling import decide, variant_keys

FORMAT = "tailormail-thompson/2"
ALL = "*"  # the segment of everyone when the policy is not segmented


class ThompsonPolicy:
    """Thompson sampling over the campaign's variants.

    ``prior_alpha`` and ``prior_beta`` are the Beta prior of every variant (1, 1 is
    uniform); ``draws`` Monte Carlo draws estimate the pmf; ``segment`` names the context
    features whose values keep separate posteriors (none by default).
    """

    name = "thompson"

    def __init__(
        self,
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
        draws: int = 4000,
        segment: str | Sequence[str] = (),
    ) -> None:
        for label, value in (("prior_alpha", prior_alpha), ("prior_beta", prior_beta)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"thompson policy: {label} must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"thompson policy: {label} must be > 0, got {value!r}")
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
            raise ConfigError(f"thompson policy: draws must be an integer >= 1, got {draws!r}")
        names = [segment] if isinstance(segment, str) else list(segment)
        if not all(isinstance(name, str) and name for name in names):
            raise ConfigError(f"thompson policy: segment must name context features: {segment!r}")
        self.prior_alpha = float(prior_alpha)
        self.prior_beta = float(prior_beta)
        self.draws = draws
        self.segment = tuple(names)
        self.model_version: str | None = None
        # segment -> variant -> [successes, failures]
        self.counts: dict[str, dict[str, list[int]]] = {}
        self._pmfs: dict[tuple[str, tuple[str, ...]], dict[str, float]] = {}

    def segment_of(self, context: Context) -> str:
        """The segment a context belongs to: the values of the ``segment`` features."""
        if not self.segment:
            return ALL
        return json.dumps([context.get(name) for name in self.segment], default=str)

    def posterior(self, key: str, segment: str = ALL) -> tuple[float, float]:
        """The Beta posterior ``(alpha, beta)`` of variant ``key`` in ``segment``."""
        successes, failures = self.counts.get(segment, {}).get(key, (0, 0))
        return self.prior_alpha + successes, self.prior_beta + failures

    def pmf(self, keys: Sequence[str], segment: str = ALL) -> dict[str, float]:
        """Each variant's estimated probability of drawing the highest rate in ``segment``.

        One pseudo-count per variant keeps every probability above zero: the exact Thompson
        probability is always positive, and a logged probability of 0 would break IPS.
        """
        # lazy: numpy and scipy take ~0.5 s to import; a plugin module loads light
        import numpy as np

        cached = self._pmfs.get((segment, tuple(keys)))
        if cached is not None:
            return cached
        posteriors = [self.posterior(key, segment) for key in keys]
        state = json.dumps([segment, list(keys), posteriors]).encode()
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(state).digest()[:8], "big"))
        alphas, betas = (np.array(values) for values in zip(*posteriors, strict=True))
        samples = rng.beta(alphas, betas, size=(self.draws, len(keys)))
        wins = np.bincount(samples.argmax(axis=1), minlength=len(keys))
        total = self.draws + len(keys)
        pmf = {key: (int(count) + 1) / total for key, count in zip(keys, wins, strict=True)}
        self._pmfs[(segment, tuple(keys))] = pmf
        return pmf

    def choose(
        self, context: Context, variants: Sequence[Variant], *, seed: int | None = None
    ) -> Decision:
        """Sample a variant from the Thompson pmf; deterministic for a given ``seed``."""
        keys = variant_keys(variants, "thompson")
        pmf = self.pmf(keys, self.segment_of(context))
        return decide(pmf, seed, self.name, self.model_version)

    def learn(self, feedback: Iterable[Feedback]) -> None:
        """Count each logged decision as a success (reward > 0) or a failure of its variant."""
        for item in feedback:
            variants = self.counts.setdefault(self.segment_of(item.context), {})
            counts = variants.setdefault(item.chosen, [0, 0])
            counts[0 if item.reward > 0 else 1] += 1
        self._pmfs.clear()

    def save(self) -> bytes:
        """The posterior counts per segment (and the settings, for the record) as JSON."""
        state = {
            "format": FORMAT,
            "prior_alpha": self.prior_alpha,
            "prior_beta": self.prior_beta,
            "segment": list(self.segment),
            "counts": self.counts,
        }
        return dump_state(state)

    def load(self, data: bytes) -> None:
        """Restore the counts written by ``save``; the priors stay as configured."""
        state = load_state(data, "thompson", FORMAT)
        if list(state.get("segment", [])) != list(self.segment):
            return  # segmented differently now: start afresh rather than mix segments up
        self.counts = {
            str(segment): {str(key): [int(s), int(f)] for key, (s, f) in variants.items()}
            for segment, variants in state["counts"].items()
        }
        self._pmfs.clear()


@hookimpl
def register_policies(register: Callable[[str, PolicyFactory], None]) -> None:
    """Register the ``thompson`` policy."""
    register("thompson", ThompsonPolicy)
