"""The ``fixed`` policy: always the same variant, the simplest baseline for a control group
or for apprentice mode ("what we send today")."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence

from engine import Context, Decision, Feedback, Variant, hookimpl
from engine.hookspecs import PolicyFactory
from engine.sampling import decide

FORMAT = "tailormail-fixed/1"


class FixedVariantPolicy:
    """Sends ``variant`` to everyone (probability 1); it learns nothing."""

    name = "fixed"

    def __init__(self, variant: str) -> None:
        if not isinstance(variant, str) or not variant:
            raise ValueError(f"fixed policy: variant must be a variant key, got {variant!r}")
        self.variant = variant
        self.model_version: str | None = None

    def choose(
        self, context: Context, variants: Sequence[Variant], *, seed: int | None = None
    ) -> Decision:
        """``variant`` with probability 1 (every other offered variant 0)."""
        keys = [v.key for v in variants]
        if self.variant not in keys:
            raise ValueError(f"fixed policy: variant {self.variant!r} is not offered ({keys})")
        pmf = {key: 1.0 if key == self.variant else 0.0 for key in keys}
        return decide(pmf, seed, self.name, self.model_version)

    def learn(self, feedback: Iterable[Feedback]) -> None:
        """Nothing to learn."""

    def save(self) -> bytes:
        """The variant, as JSON."""
        return json.dumps({"format": FORMAT, "variant": self.variant}).encode()

    def load(self, data: bytes) -> None:
        """Restore a state written by ``save``."""
        state = json.loads(data)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError("fixed policy: not a saved fixed policy")
        self.variant = str(state["variant"])


@hookimpl
def register_policies(register: Callable[[str, PolicyFactory], None]) -> None:
    """Register the ``fixed`` policy."""
    register("fixed", FixedVariantPolicy)
