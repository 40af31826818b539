"""Public value types and protocols: the contract between the engine and its plugins."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, ClassVar, Protocol, runtime_checkable

Context = dict[str, Any]
"""A recipient's context: str values are categorical features, int/float numeric ones,
nested dicts are feature namespaces."""


@dataclass(frozen=True)
class Variant:
    """One arm of a campaign: a subject line template, a body template and its features."""

    key: str
    subject: str
    template: str
    features: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """What a policy chose for one recipient, with the probability it had of choosing it."""

    variant: str
    probability: float
    pmf: dict[str, float]
    policy: str
    model_version: str | None = None


@dataclass(frozen=True)
class Feedback:
    """One logged decision and its reward, as a policy learns from it."""

    context: Context
    variants: list[Variant]
    chosen: str
    probability: float
    reward: float


DEFAULT_INTERACTION_KIND = "interaction"
"""The ``kind`` of an interaction imported without one."""


@dataclass(frozen=True)
class Interaction:
    """A user's interaction with a catalogue item (a view, a purchase, a click).

    ``kind`` tells interactions apart (``view``, ``purchase``, ``email_click`` for a click on
    an item inside an email, ...), so recipes can weigh them and filters exclude by kind;
    it is ``"interaction"`` when the data does not say.
    """

    user_id: str
    item_id: str
    timestamp: datetime
    value: float = 1.0
    kind: str = DEFAULT_INTERACTION_KIND


@dataclass(frozen=True)
class Item:
    """A catalogue item and its attributes (title, url, category, ...)."""

    item_id: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipient:
    """Someone a campaign can mail: id, address and free-form attributes (segment, country...)."""

    recipient_id: str
    email: str
    attributes: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Policy(Protocol):
    """A contextual bandit that picks one variant per recipient.

    ``choose`` must be deterministic for a given ``seed``: the engine passes a seed derived
    from the decision id so a resumed run makes the same choice.
    """

    name: str
    model_version: str | None

    def choose(
        self, context: Context, variants: Sequence[Variant], *, seed: int | None = None
    ) -> Decision: ...

    def learn(self, feedback: Iterable[Feedback]) -> None: ...

    def save(self) -> bytes: ...

    def load(self, data: bytes) -> None: ...


@runtime_checkable
class Recipe(Protocol):
    """Chooses the catalogue items an alert shows."""

    def fit(self, interactions: Iterable[Interaction], items: Iterable[Item] = ()) -> None: ...

    def recommend(self, user_id: str, k: int, exclude: Iterable[str] = ()) -> list[str]: ...


@runtime_checkable
class SimilarItems(Protocol):
    """A recipe that can also answer "items like this one" (``tailormail similar``)."""

    def similar(self, item_id: str, k: int) -> list[str]: ...


class SendStatus(enum.StrEnum):
    """How a delivery attempt ended."""

    SENT = "sent"
    TEMPORARY_FAILURE = "temporary_failure"
    PERMANENT_FAILURE = "permanent_failure"
    UNKNOWN = "unknown"  # ambiguous: the message may or may not have left


@dataclass
class Message:
    """A rendered email, ready for a delivery backend."""

    send_id: int
    message_id: str
    from_address: str
    to_address: str
    subject: str
    html: str
    text: str
    headers: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    # The keyed reference that stands for the send outside (headers, provider metadata);
    # the ledger id never leaves (engine.identifiers).
    send_ref: str | None = None


@dataclass(frozen=True)
class SendResult:
    """The outcome of sending one message."""

    send_id: int
    status: SendStatus
    provider_id: str | None = None
    error: str | None = None
    rejected: bool = False  # the recipient's server refused the address itself (hard bounce)


class HandoverObserver(Protocol):
    """Told about each message just before it goes to the transport and once it is answered.

    The engine's hand-over journal is one: after a crash it tells the messages that were
    with the transport (ambiguous) from those that never reached it (sent again).
    """

    def handing_over(self, message: Message) -> None: ...

    def outcome(self, result: SendResult) -> None: ...


class DeliveryBackend:
    """Base class for delivery backends: a context manager whose ``send`` delivers a batch.

    Subclasses override ``send`` and, where they hold a connection, ``open``/``close``.
    A backend that delivers message by message sets ``reports_handover = True`` and calls
    ``handing_over(message)`` just before each message goes and ``handed(result)`` right
    after (``send_each`` does both): then a crash costs only the messages in flight. Any
    other backend's batch counts as handed over as a whole when ``send`` is called.
    """

    name = "base"
    reports_handover: ClassVar[bool] = False
    observer: HandoverObserver | None = None
    """Set by the engine before ``send``; ``None`` outside a campaign run."""

    def reaches_other_machines(self) -> bool:
        """True when messages leave this machine for real recipients (SMTP to another
        host, a provider's API); then start-up refuses test addresses (engine.realmail).

        The default is False: a backend that keeps mail here (a file, memory, a log).
        """
        return False

    def open(self) -> None:
        """Acquire resources (a connection); called on ``__enter__``."""

    def close(self) -> None:
        """Release resources; called on ``__exit__``."""

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        """Deliver ``messages``; return one result per message, in order."""
        raise NotImplementedError

    def handing_over(self, message: Message) -> None:
        """Report that ``message`` goes to the transport now (call it before it goes)."""
        if self.observer is not None:
            self.observer.handing_over(message)

    def handed(self, result: SendResult) -> SendResult:
        """Report the transport's answer for one message; returns ``result``."""
        if self.observer is not None:
            self.observer.outcome(result)
        return result

    def send_each(
        self, messages: Sequence[Message], send_one: Callable[[Message], SendResult]
    ) -> list[SendResult]:
        """``send`` for a backend that delivers one at a time, reporting each hand-over."""
        results = []
        for message in messages:
            self.handing_over(message)
            results.append(self.handed(send_one(message)))
        return results

    def reconcile(self, send_ids: Sequence[int]) -> dict[int, SendResult]:
        """What the transport knows about sends whose outcome is unknown.

        For each send id it can answer for: ``SENT`` (it has the message) or
        ``TEMPORARY_FAILURE`` (it certainly never got it: the run sends it again). Ids left
        out stay unknown. The default knows nothing; the ``outbox`` backend looks in its
        folder.
        """
        return {}

    def forget(self, send_ids: Sequence[int]) -> int:
        """Erase the copies of these sends the transport keeps where tailormail can reach
        them (``tailormail forget``, retention); returns how many it erased.

        Called without ``open``: it must not need a connection. The default keeps
        nothing; the ``outbox`` backend deletes the messages' files.
        """
        return 0

    def __enter__(self) -> DeliveryBackend:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventType(enum.StrEnum):
    """The normalized vocabulary of tracking and provider events."""

    DELIVERED = "delivered"
    DEFERRED = "deferred"  # the receiving server said "later"; the provider keeps trying
    OPEN = "open"
    CLICK = "click"
    UNSUBSCRIBE = "unsubscribe"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"


@dataclass(frozen=True)
class TrackingEvent:
    """One event about a sent message, from the tracking server or a provider webhook."""

    type: EventType
    send_id: int | None
    timestamp: datetime
    provider_event_id: str | None = None
    provider_message_id: str | None = None
    url: str | None = None
    user_agent: str | None = None
    bot: bool = False
    machine: bool = False
    recipient_email: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    # The keyed send reference a provider echoed back (engine.identifiers), joined by lookup.
    send_ref: str | None = None
