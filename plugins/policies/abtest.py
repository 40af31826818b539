"""The ``abtest`` policy: the A/B test a team would run, as a policy.

A uniform split over the variants still in the test; a variant the sequential test shows
worse than the leader leaves it (keeping only its exploration share), and the last one
left is the winner, for everyone, with the exploration share kept for the others. The
test is the mixture sequential probability ratio test (mSPRT) of Johari, Pekelis and
Walsh, "Always valid inference" (2017), on the difference of two click rates: its
p-values stay valid however often they are looked at, so checking after every reward
batch is sound. A variant leaves once its always-valid p-value against the leader
(highest rate) is below ``(1 - confidence) / (K - 1)`` (Bonferroni over the K - 1
comparisons with the leader).

Defaults, fixed before any benchmark was run and not tuned on it:

- ``confidence = 0.95``;
- ``explore = 0.10``: once a variant has left the test, 10% of sends stay uniform over
  all variants (the rest is split over the variants still in, or all on the winner);
- ``mixing_sd = 0.01``: the mSPRT's normal mixture over the difference of rates, centred
  on 0 with a standard deviation of one percentage point (the size of lift that matters at
  email click rates);
- ``min_trials = 100``: no variant is compared before it was sent 100 times (the normal
  approximation of the test needs a few successes).

The context is ignored: an A/B test picks one winner for everyone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from engine import Context, Decision, Feedback, Variant, hookimpl
from engine.errors import ConfigError
from engine.hookspecs import PolicyFactory
from engine.policy_state import dump_state, load_state
from engine.sampling import decide, variant_keys

FORMAT = "tailormail-abtest/1"


def msprt_likelihood_ratio(
    rate_a: float, n_a: int, rate_b: float, n_b: int, mixing_sd: float
) -> float:
    """The mSPRT mixture likelihood ratio for ``rate_a - rate_b != 0`` (normal mixture).

    ``1 / ratio`` (capped at 1) is the always-valid p-value at this point of the test.
    """
    variance = rate_a * (1 - rate_a) / n_a + rate_b * (1 - rate_b) / n_b
    if variance <= 0:
        return 1.0  # no variation seen yet: no evidence either way
    tau2 = mixing_sd**2
    diff = rate_a - rate_b
    exponent = tau2 * diff * diff / (2 * variance * (variance + tau2))
    return math.sqrt(variance / (variance + tau2)) * math.exp(min(exponent, 700.0))


class ABTestPolicy:
    """Uniform until the sequential test names a winner, then the winner plus exploration.

    Parameters: ``confidence`` (0.95), ``explore`` (0.10), ``mixing_sd`` (0.01) and
    ``min_trials`` (100); see the module docstring for what each means.
    """

    name = "abtest"

    def __init__(
        self,
        confidence: float = 0.95,
        explore: float = 0.10,
        mixing_sd: float = 0.01,
        min_trials: int = 100,
    ) -> None:
        checks = (
            ("confidence", confidence, 0.5, 1.0, False),
            ("explore", explore, 0.0, 1.0, True),
            ("mixing_sd", mixing_sd, 0.0, 1.0, False),
        )
        for label, value, low, high, closed in checks:
            valid = isinstance(value, int | float) and not isinstance(value, bool)
            if not valid or not (low < value < high or (closed and value in (low, high))):
                raise ConfigError(
                    f"abtest policy: {label} must be a number between {low:g} and {high:g}, "
                    f"got {value!r}"
                )
        if isinstance(min_trials, bool) or not isinstance(min_trials, int) or min_trials < 1:
            raise ConfigError(f"abtest policy: min_trials must be an integer >= 1: {min_trials!r}")
        self.confidence = float(confidence)
        self.explore = float(explore)
        self.mixing_sd = float(mixing_sd)
        self.min_trials = min_trials
        self.model_version: str | None = None
        self.trials: dict[str, int] = {}
        self.successes: dict[str, int] = {}
        self.winner: str | None = None
        self.decided_after: int | None = None  # decisions learned when the winner was named
        self.dropped: dict[str, int] = {}  # variant -> decisions learned when it left
        # Always-valid p-value of each pair of variants ("a|b", sorted): a running minimum.
        self.p_values: dict[str, float] = {}

    def rate(self, key: str) -> float:
        """The observed success rate of variant ``key`` (0 before any trial)."""
        trials = self.trials.get(key, 0)
        return self.successes.get(key, 0) / trials if trials else 0.0

    def choose(
        self, context: Context, variants: Sequence[Variant], *, seed: int | None = None
    ) -> Decision:
        """Uniform over the variants still in the test; exploration for those that left."""
        keys = variant_keys(variants, "abtest")
        live = [self.winner] if self.winner in keys else [k for k in keys if k not in self.dropped]
        if not live or len(live) == len(keys):
            pmf = dict.fromkeys(keys, 1.0 / len(keys))
        else:
            pmf = dict.fromkeys(keys, self.explore / len(keys))
            for key in live:
                pmf[key] += (1.0 - self.explore) / len(live)
        return decide(pmf, seed, self.name, self.model_version)

    def learn(self, feedback: Iterable[Feedback]) -> None:
        """Count the results, then look at the test (a winner, once named, stays)."""
        offered: set[str] = set()
        for item in feedback:
            offered.update(variant.key for variant in item.variants)
            self.trials[item.chosen] = self.trials.get(item.chosen, 0) + 1
            if item.reward > 0:
                self.successes[item.chosen] = self.successes.get(item.chosen, 0) + 1
        if self.winner is None and offered:
            self._look(sorted(offered))

    def _look(self, keys: list[str]) -> None:
        if len(keys) < 2 or any(self.trials.get(key, 0) < self.min_trials for key in keys):
            return
        for i, first in enumerate(keys):
            for second in keys[i + 1 :]:
                ratio = msprt_likelihood_ratio(
                    self.rate(first),
                    self.trials[first],
                    self.rate(second),
                    self.trials[second],
                    self.mixing_sd,
                )
                pair = f"{first}|{second}"
                self.p_values[pair] = min(self.p_values.get(pair, 1.0), 1.0 / ratio)
        live = [key for key in keys if key not in self.dropped]
        leader = max(live, key=self.rate)
        threshold = (1.0 - self.confidence) / (len(keys) - 1)
        learned = sum(self.trials.values())
        for other in live:
            if other != leader and self.p_value(leader, other) < threshold:
                self.dropped[other] = learned
        if len([key for key in live if key not in self.dropped]) == 1:
            self.winner = leader
            self.decided_after = learned

    def p_value(self, first: str, second: str) -> float:
        """The always-valid p-value that variants ``first`` and ``second`` differ."""
        return self.p_values.get("|".join(sorted((first, second))), 1.0)

    def save(self) -> bytes:
        """The counts, the test's state and the winner as JSON."""
        state = {
            "format": FORMAT,
            "trials": self.trials,
            "successes": self.successes,
            "winner": self.winner,
            "decided_after": self.decided_after,
            "dropped": self.dropped,
            "p_values": self.p_values,
        }
        return dump_state(state)

    def load(self, data: bytes) -> None:
        """Restore a state written by ``save``."""
        state = load_state(data, "abtest", FORMAT)
        self.trials = {str(k): int(v) for k, v in state["trials"].items()}
        self.successes = {str(k): int(v) for k, v in state["successes"].items()}
        self.winner = state.get("winner")
        self.decided_after = state.get("decided_after")
        self.dropped = {str(k): int(v) for k, v in state.get("dropped", {}).items()}
        self.p_values = {str(k): float(v) for k, v in state.get("p_values", {}).items()}


@hookimpl
def register_policies(register: Callable[[str, PolicyFactory], None]) -> None:
    """Register the ``abtest`` policy."""
    register("abtest", ABTestPolicy)
