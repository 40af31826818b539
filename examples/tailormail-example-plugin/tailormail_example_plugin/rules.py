"""The ``first_match`` policy: a rule-based baseline, the logic a team had before a bandit.

Rules are tried in order; the first whose conditions all match the recipient's context
picks the variant, and a recipient no rule matches gets ``default`` (the first variant
when unset). An ``explore`` share is spread evenly over every variant, so the logged
probabilities stay positive and a bandit can later be evaluated offline on its logs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from engine import Context, Decision, Feedback, Variant
from engine.policy_state import load_state
from engine.sampling import decide, variant_keys

FORMAT = "tailormail-first-match/1"


class Rule:
    """``when`` (feature -> value, or a list of accepted values) and the ``variant`` key."""

    def __init__(self, when: Mapping[str, Any], variant: str) -> None:
        if not isinstance(variant, str) or not variant:
            raise ValueError(f"first_match policy: a rule needs a variant key, got {variant!r}")
        self.when = {
            str(name): set(map(str, value)) if isinstance(value, list) else {str(value)}
            for name, value in when.items()
        }
        self.variant = variant

    def matches(self, context: Context) -> bool:
        """True when every condition holds (values compared as strings)."""
        return all(str(context.get(name)) in wanted for name, wanted in self.when.items())


class FirstMatchPolicy:
    """Rule-based choice with an exploration share; learning only counts the feedback.

    ``rules`` is a list of ``{when = {...}, variant = "key"}`` tables, ``default`` the
    variant for recipients no rule matches, ``explore`` the uniform share (0.1).
    """

    name = "first_match"

    def __init__(
        self,
        rules: Sequence[Mapping[str, Any]] = (),
        default: str | None = None,
        explore: float = 0.1,
    ) -> None:
        if isinstance(explore, bool) or not isinstance(explore, int | float):
            raise TypeError(f"first_match policy: explore must be a number, got {explore!r}")
        if not 0.0 <= explore <= 1.0:
            raise ValueError(f"first_match policy: explore must be in [0, 1], got {explore!r}")
        self.rules = []
        for rule in rules:
            unknown = set(rule) - {"when", "variant"}
            if unknown:
                raise ValueError(f"first_match policy: unknown rule keys {sorted(unknown)}")
            self.rules.append(Rule(dict(rule.get("when", {})), rule.get("variant", "")))
        self.default = default
        self.explore = float(explore)
        self.model_version: str | None = None
        self.feedback_seen = 0

    def pick(self, context: Context, keys: Sequence[str]) -> str:
        """The variant the rules give ``context`` (among ``keys``)."""
        for rule in self.rules:
            if rule.variant in keys and rule.matches(context):
                return rule.variant
        return self.default if self.default in keys else keys[0]

    def choose(
        self, context: Context, variants: Sequence[Variant], *, seed: int | None = None
    ) -> Decision:
        """The rules' variant with ``1 - explore`` (plus its share of the exploration)."""
        keys = variant_keys(variants, "first_match")
        pmf = {key: self.explore / len(keys) for key in keys}
        pmf[self.pick(context, keys)] += 1.0 - self.explore
        return decide(pmf, seed, self.name, self.model_version)

    def learn(self, feedback: Iterable[Feedback]) -> None:
        """Rules do not learn; the feedback is only counted."""
        self.feedback_seen += sum(1 for _ in feedback)

    def save(self) -> bytes:
        """The feedback count as JSON (the rules live in the campaign file)."""
        return json.dumps({"format": FORMAT, "feedback_seen": self.feedback_seen}).encode()

    def load(self, data: bytes) -> None:
        """Restore the count written by ``save``."""
        state = load_state(data, "first_match", FORMAT)
        self.feedback_seen = int(state["feedback_seen"])
