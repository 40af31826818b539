"""What a policy knows about each recipient: the answers of the features hooks, merged.

``recipient_features_batch`` answers are merged first, then ``recipient_features`` ones;
within each hook, pluggy calls the last-registered plugin first, and that answer wins a
clash.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.types import Recipient

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.campaigns import Campaign


def contexts_for(
    engine: Engine, campaign: Campaign, recipients: Sequence[Recipient]
) -> dict[str, dict[str, Any]]:
    """The policy's context per recipient id: every features answer merged."""
    hook = engine.pm.hook
    contexts: dict[str, dict[str, Any]] = {r.recipient_id: {} for r in recipients}
    batches = hook.recipient_features_batch(engine=engine, campaign=campaign, recipients=recipients)
    for answer in reversed(batches):
        for recipient_id, features in answer.items():
            if recipient_id in contexts and features:
                contexts[recipient_id].update(features)
    if hook.recipient_features.get_hookimpls():
        for recipient in recipients:
            context = contexts[recipient.recipient_id]
            answers = hook.recipient_features(engine=engine, campaign=campaign, recipient=recipient)
            for features in reversed(answers):
                context.update(features)
    return contexts
