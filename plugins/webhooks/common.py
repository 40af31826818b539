"""What the provider webhooks share: how a send travels through a provider and back.

A backend sets ``SEND_ID_FIELD`` to the send's keyed reference (``engine.identifiers``);
mail sent before references existed carries the numeric ledger id, which still joins.
"""

from __future__ import annotations

from typing import Any

from engine.identifiers import is_send_ref
from engine.types import Message

SEND_ID_FIELD = "tailormail_send_id"
"""The custom argument (tag, metadata, user variable) each HTTP backend sets on a message."""


def send_id_for(message: Message) -> str:
    """The value of ``SEND_ID_FIELD`` for ``message``: its keyed reference (a message
    built without one, outside a campaign run, falls back to its numeric id)."""
    return message.send_ref or str(message.send_id)


def _single(value: Any) -> Any:
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def send_id_from(value: Any) -> int | None:
    """The numeric send id a provider echoed back (a string or a one-element list) from
    mail sent before keyed references, else None.

    It is only a hint: the event store falls back to the provider's message id.
    """
    value = _single(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 < value < 2**63 else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def send_ref_from(value: Any) -> str | None:
    """The keyed send reference a provider echoed back (a string or a one-element list),
    else None; the event store looks it up in the ledger."""
    value = _single(value)
    return value if is_send_ref(value) else None
