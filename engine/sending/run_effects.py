"""What a campaign run does to the world, passed into the run rather than reached from it.

A ``CampaignRun`` writes its ledger, opens its delivery backend, hands shards to workers
and tells ``message_sent`` observers only through the ``RunEffects`` it was given, and it
has no default: whoever builds a run chooses them. A real run gets
``engine.sending.real_run.real_effects``; a rehearsal (``engine.sending.rehearsal``) passes
in-memory ones, so no code path of the run (a shard, a retry, a resumed page) can build
the real ones again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from engine.models import LedgerRow
from engine.types import DeliveryBackend, Message, SendResult

if TYPE_CHECKING:
    from engine.sending.pipeline import CampaignRun, Progress

ShardRunner = Callable[["CampaignRun", "Progress | None", "Progress | None"], None]
"""Sends an open run's shards on workers (``engine.sending.real_run.real_shards``)."""


class HeldRow(Protocol):
    """A ledger row a run holds, as the run reads it (a ``LedgerRow`` is one; ``claim``
    gives lighter ones, ``engine.ledger.transitions.ClaimedRow``)."""

    @property
    def id(self) -> int | None: ...
    @property
    def recipient_id(self) -> str: ...
    @property
    def decision_id(self) -> str: ...
    @property
    def variant(self) -> str | None: ...
    @property
    def items(self) -> list[str] | None: ...


class Ledger(Protocol):
    """The ledger of one run as a run uses it (``engine.ledger.RunLedger`` is the real one)."""

    def open(
        self, scheduled_for: datetime | None, variants: Sequence[dict[str, Any]]
    ) -> str | None:
        """Start the run and this worker; returns the status the run had (None: new)."""

    def join(self) -> None:
        """Start this worker on a run opened elsewhere."""

    def leave(self) -> None:
        """Settle this worker's rows and release it."""

    def close(self, status: str, error: str | None = None) -> None:
        """Release this worker and mark the run ``status``."""

    def pin_model(self, version: str) -> str:
        """Record the model version the run decides with; return the recorded one."""

    def model_version(self) -> str | None:
        """The model version the run pinned."""

    def pin_offered(self, offered: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Record the variants the run offers (unless recorded); return the recorded ones."""

    def record_shards(self, shards: int) -> None:
        """Note how many shards the run was split into."""

    def rows_written(self) -> int:
        """How many rows the run has."""

    def recipients_done(self, recipient_ids: Sequence[str]) -> set[str]:
        """Those of ``recipient_ids`` (an audience page, in id order) that have a row."""

    def claim(self, rows: Sequence[dict[str, Any]]) -> tuple[Sequence[HeldRow], int]:
        """Insert a batch's rows; the pending ones now held, and how many skipped landed."""

    def hand_over(self, messages: Sequence[Message]) -> list[Message]:
        """Mark messages as with the transport; return those still held."""

    def transmit(self, backend: DeliveryBackend, messages: Sequence[Message]) -> list[SendResult]:
        """Give ``messages`` to ``backend``; its results."""

    def record(self, results: Sequence[SendResult]) -> list[str]:
        """Record the batch's outcomes; the state of each row, in order."""

    def fail(self, send_ids: Sequence[int], error: str, *, fixable: bool = False) -> None:
        """Mark rows whose messages could not be built as failed."""

    def reclaim_deferred(self, *, fixable: bool = False) -> list[LedgerRow]:
        """Take back this run's deferred rows to retry."""

    def recover(self) -> int:
        """Settle the rows dead workers held."""

    def reconcile_unknown(self) -> int:
        """Settle unknown rows the backend can answer for."""


@dataclass(frozen=True)
class RunEffects:
    """Everything a run may change outside itself, chosen by whoever builds the run."""

    ledger: Ledger
    backend: Callable[[], DeliveryBackend]
    """Opens the delivery backend (at the run's first batch)."""
    shards: ShardRunner | None
    """Sends the run's shards on workers; ``None``: this process sends the whole run."""
    sent: Callable[[Message, SendResult], None]
    """Told about every message the backend answered (the ``message_sent`` hook)."""
    shares_recipe_fit: bool
    """Whether the run records its recipe fit under its id, for its workers to share."""
