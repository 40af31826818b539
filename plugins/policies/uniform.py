"""The ``uniform`` policy: every variant equally likely, the A/B-test baseline."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from engine import Context, Decision, Feedback, Variant, hookimpl
from engine.hookspecs import PolicyFactory
from engine.sampling import decide, variant_keys

FORMAT = "tailormail-uniform/1"


class UniformPolicy:
    """Picks a variant uniformly at random; learning only counts the feedback it saw."""

    name = "uniform"

    def __init__(self) -> None:
        self.model_version: str | None = None
        self.feedback_seen = 0

    def choose(
        self, context: Context, variants: Sequence[Variant], *, seed: int | None = None
    ) -> Decision:
        """Choose one of ``variants`` with probability ``1 / len(variants)``.

        ``seed`` makes the choice deterministic; without it the choice is random.
        """
        keys = variant_keys(variants, "uniform")
        pmf = {key: 1.0 / len(keys) for key in keys}
        return decide(pmf, seed, self.name, self.model_version)

    def learn(self, feedback: Iterable[Feedback]) -> None:
        """Count the feedback: a uniform policy has nothing to learn."""
        self.feedback_seen += sum(1 for _ in feedback)

    def save(self) -> bytes:
        """Serialize the policy's state (its feedback count) as JSON bytes."""
        return json.dumps({"format": FORMAT, "feedback_seen": self.feedback_seen}).encode()

    def load(self, data: bytes) -> None:
        """Restore a state written by ``save``."""
        state: Any = json.loads(data)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError("uniform policy: not a saved uniform policy")
        self.feedback_seen = int(state["feedback_seen"])


@hookimpl
def register_policies(register: Callable[[str, PolicyFactory], None]) -> None:
    """Register the ``uniform`` policy."""
    register("uniform", UniformPolicy)
