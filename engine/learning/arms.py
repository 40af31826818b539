"""Control group and apprentice mode: who gets the baseline, and what the policy would do.

With a ``[baseline]`` in the campaign file, each recipient is in the ``control`` arm (a
stable share of the audience, ``control_share``, chosen by a hash of campaign and
recipient, so a person stays in it run after run) or the ``treatment`` arm. The control
always gets the baseline. In apprentice mode the baseline acts for the treatment arm too,
while the policy's own choice and probability are logged beside it (the ``shadow``), so
it learns from the existing logic before it takes over (set ``apprentice = false``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.campaigns import Campaign
from engine.types import Context, Decision, Policy, Variant

if TYPE_CHECKING:
    from engine.app import Engine

CONTROL, TREATMENT = "control", "treatment"


def in_control(campaign: Campaign, recipient_id: str) -> bool:
    """True when ``recipient_id`` is in the campaign's held-out control group."""
    share = campaign.baseline.control_share if campaign.baseline else 0.0
    if share <= 0:
        return False
    digest = hashlib.sha256(f"{campaign.name}\x00control\x00{recipient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def baseline_policy(engine: Engine, campaign: Campaign) -> Policy | None:
    """The campaign's baseline policy, or None without a ``[baseline]`` (a bad one failed
    when the Engine started: ``baseline.policy`` or ``[baseline]`` named in the error)."""
    baseline = campaign.baseline
    if baseline is None:
        return None
    return engine.policies.get(baseline.policy_name)(**baseline.policy_params)


def _shadow(decision: Decision) -> dict[str, Any]:
    return {
        "variant": decision.variant,
        "probability": decision.probability,
        "pmf": dict(decision.pmf),
        "policy": decision.policy,
        "model_version": decision.model_version,
    }


class Arms:
    """Decides for one run: the policy, the baseline, or the baseline with a shadow."""

    def __init__(self, campaign: Campaign, policy: Policy, baseline: Policy | None) -> None:
        self.campaign = campaign
        self.policy = policy
        self.baseline = baseline

    def decide(
        self, recipient_id: str, context: Context, variants: Sequence[Variant], seed: int
    ) -> tuple[Decision, dict[str, Any]]:
        """The acting decision and the row's ``arm`` and ``shadow`` fields."""
        if self.baseline is None or self.campaign.baseline is None:
            return self.policy.choose(context, variants, seed=seed), {"arm": None, "shadow": None}
        if in_control(self.campaign, recipient_id):
            acting = self.baseline.choose(context, variants, seed=seed)
            return acting, {"arm": CONTROL, "shadow": None}
        own = self.policy.choose(context, variants, seed=seed)
        if self.campaign.baseline.apprentice:
            acting = self.baseline.choose(context, variants, seed=seed)
            return acting, {"arm": TREATMENT, "shadow": _shadow(own)}
        return own, {"arm": TREATMENT, "shadow": None}
