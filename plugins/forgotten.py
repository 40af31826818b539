"""Built-in eligibility: an address erased with ``tailormail forget`` is never mailed again.

Only a keyed hash of the address is kept (``engine.forgetting``), so the check hashes the
batch's addresses and looks them up: one query per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine import Recipient, hookimpl
from engine.db import session_scope
from engine.forgetting import forgotten

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.campaigns import Campaign

REASON = "forgotten (erased on request: never mailed again)"


@hookimpl(tryfirst=True)
def eligible_batch(
    engine: Engine, campaign: Campaign, recipients: Sequence[Recipient]
) -> dict[str, str]:
    """Skip every recipient whose address was forgotten, whatever campaign asks."""
    if not recipients:
        return {}
    with session_scope(engine.db) as session:
        erased = forgotten(session, engine.secret, [r.email for r in recipients])
    return {r.recipient_id: REASON for r in recipients if r.email.lower() in erased}
