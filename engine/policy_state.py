"""Saved policy state as JSON, for policies whose model is a few counts (``save``/``load``)."""

from __future__ import annotations

import json
from typing import Any


def dump_state(state: dict[str, Any]) -> bytes:
    """``state`` (with its ``format`` key) as the bytes ``Policy.save`` returns."""
    return json.dumps(state, sort_keys=True).encode()


def load_state(data: bytes, policy: str, format_name: str) -> dict[str, Any]:
    """The state ``dump_state`` wrote, checked to be ``format_name``; a ``ValueError``
    naming ``policy`` for anything else (another policy's model, bytes that are not JSON)."""
    try:
        state: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{policy} policy: not a saved {policy} policy ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != format_name:
        raise ValueError(f"{policy} policy: not a saved {policy} policy")
    return state
