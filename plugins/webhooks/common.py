"""What the provider webhooks share: how a send id travels through a provider and back."""

from __future__ import annotations

from typing import Any

SEND_ID_FIELD = "tailormail_send_id"
"""The custom argument (tag, metadata, user variable) each HTTP backend sets on a message."""


def send_id_from(value: Any) -> int | None:
    """The send id a provider echoed back (a string or a one-element list), else None.

    It is only a hint: the event store falls back to the provider's message id.
    """
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 < value < 2**63 else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    return None
