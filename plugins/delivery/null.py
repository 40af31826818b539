"""The ``null`` backend: builds and serializes every message, then discards it.

For measuring a run without any transport (``bench/campaign.py``) and for dry rehearsals
of a large send: each message costs what a real backend's preparation costs (the MIME
form and its bytes), and a message a real backend would refuse fails the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from engine import hookimpl
from engine.errors import ConfigError
from engine.mime import format_message_id, message_bytes
from engine.types import DeliveryBackend, Message, SendResult, SendStatus

if TYPE_CHECKING:
    from engine.app import Engine


class NullBackend(DeliveryBackend):
    """Serializes each message to bytes and drops it; counts what it dropped."""

    name = "null"

    def __init__(self, engine: Engine | None = None, **unknown: Any) -> None:
        if unknown:
            names = ", ".join(repr(key) for key in sorted(unknown))
            raise ConfigError(f"delivery.null: unknown option {names}")
        self.engine = engine
        self.messages = 0
        self.bytes = 0

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        """Serialize every message; one a real backend would refuse fails permanently."""
        return [self._discard(message) for message in messages]

    def _discard(self, message: Message) -> SendResult:
        try:
            data = message_bytes(message)
        except ValueError as exc:
            return SendResult(message.send_id, SendStatus.PERMANENT_FAILURE, error=str(exc))
        self.messages += 1
        self.bytes += len(data)
        return SendResult(
            message.send_id, SendStatus.SENT, provider_id=format_message_id(message.message_id)
        )


@hookimpl
def register_backends(register: Callable[[str, Any], None]) -> None:
    """Register the ``null`` backend."""
    register("null", NullBackend)
