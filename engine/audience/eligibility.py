"""Who of a batch may get a campaign's email now: the core's compliance checks, then the
eligibility plugins.

The core's checks come first and cannot be turned off (suppressions, unsubscribes,
bounces, complaints, forgotten addresses: ``engine.audience.compliance``); then
``eligible_batch`` answers about the rest (the first plugin's reason wins per recipient),
then ``eligible`` is asked about each recipient still in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.audience.compliance import compliance_skips
from engine.types import Recipient

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.campaigns import Campaign


def ineligible(
    engine: Engine, campaign: Campaign, recipients: Sequence[Recipient]
) -> dict[str, str]:
    """The recipients of ``recipients`` to skip in a run of ``campaign``, with the reason."""
    hook = engine.pm.hook
    reasons = compliance_skips(engine, campaign, recipients)
    rest = [r for r in recipients if r.recipient_id not in reasons]
    for answer in hook.eligible_batch(engine=engine, campaign=campaign, recipients=rest):
        for recipient_id, reason in answer.items():
            if reason:
                reasons.setdefault(recipient_id, str(reason))
    if hook.eligible.get_hookimpls():  # per-recipient plugins, when any is installed
        for recipient in recipients:
            if recipient.recipient_id in reasons:
                continue
            reason = hook.eligible(engine=engine, campaign=campaign, recipient=recipient)
            if reason:
                reasons[recipient.recipient_id] = str(reason)
    return reasons
