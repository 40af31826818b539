"""The ``memory`` backend: keeps sent messages in a list, for tests and notebooks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any

from engine import hookimpl
from engine.errors import ConfigError
from engine.mime import format_message_id, message_bytes
from engine.types import DeliveryBackend, Message, SendResult, SendStatus

if TYPE_CHECKING:
    from engine.app import Engine


class MemoryBackend(DeliveryBackend):
    """Appends each sent message to ``self.outbox`` and to ``engine.memory_outbox``.

    The engine-level list outlives the backend instance (the engine builds one per batch),
    so a test can read everything a campaign run sent. ``fail_for`` lists addresses that
    get a permanent failure that rejects the address (a hard bounce), to exercise bounce
    handling without a provider.
    """

    name = "memory"
    reports_handover = True

    def __init__(self, engine: Engine | None = None, fail_for: Iterable[str] = (), **unknown: Any):
        if unknown:
            names = ", ".join(repr(key) for key in sorted(unknown))
            raise ConfigError(f"delivery.memory: unknown option {names}")
        if isinstance(fail_for, str):
            # A bare string would be iterated character by character.
            fail_for = [fail_for]
        self.engine = engine
        self.fail_for = frozenset(_address(address) for address in fail_for)
        self.outbox: list[Message] = []
        if engine is not None and getattr(engine, "memory_outbox", None) is None:
            setattr(engine, "memory_outbox", [])  # noqa: B010 - Engine declares no such field

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        """Record each message; addresses in ``fail_for`` fail permanently."""
        return self.send_each(messages, self._send_one)

    def _send_one(self, message: Message) -> SendResult:
        try:
            # Build the MIME form anyway, so tests catch what a real backend would refuse.
            message_bytes(message)
        except ValueError as exc:
            return SendResult(message.send_id, SendStatus.PERMANENT_FAILURE, error=str(exc))
        if _address(message.to_address) in self.fail_for:
            return SendResult(
                message.send_id,
                SendStatus.PERMANENT_FAILURE,
                error=f"550 {message.to_address} is in fail_for",
                rejected=True,  # as a receiving server refusing the address: a hard bounce
            )
        self.outbox.append(message)
        if self.engine is not None:
            getattr(self.engine, "memory_outbox").append(message)  # noqa: B009
        return SendResult(
            message.send_id, SendStatus.SENT, provider_id=format_message_id(message.message_id)
        )


def _address(value: str) -> str:
    # Compare bare, lower-cased addresses: "Ann <ANN@x.org>" and "ann@x.org" are one inbox.
    return parseaddr(value)[1].lower()


@hookimpl
def register_backends(register: Callable[[str, Any], None]) -> None:
    """Register the ``memory`` backend."""
    register("memory", MemoryBackend)
