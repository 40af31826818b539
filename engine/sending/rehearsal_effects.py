"""The side effects of a rehearsal: a ledger kept in memory and a backend that only looks.

``Rehearsed(run_id).effects()`` is what a dry run or a preview passes into its
``CampaignRun``: every ledger write stays in this process, the "backend" keeps what would
have been sent, no shard is ever handed to a worker and no ``message_sent`` observer is
told. Whatever path the run takes, it cannot reach the database ledger, the delivery
backend or a worker, because it was never given them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from engine.ledger import STATUS_FOR
from engine.models import LedgerRow, LedgerStatus
from engine.sending.run_effects import HeldRow, RunEffects
from engine.tokens import TEST_SEND_ID
from engine.types import DeliveryBackend, Message, SendResult, SendStatus

SKIPPED = "-"
"""A skipped recipient's entry in ``MemoryLedger.choices``."""


class MemoryLedger:
    """A run's ledger rows in memory: one per recipient, as the database would keep them."""

    def __init__(self, run_id: str) -> None:
        """Empty; nothing is ever written anywhere."""
        self.run_id = run_id
        self.rows: dict[str, dict[str, Any]] = {}
        self.skip_reasons: Counter[str] = Counter()
        self._model: str | None = None

    def open(
        self, scheduled_for: datetime | None, variants: Sequence[dict[str, Any]]
    ) -> str | None:
        """No run row: a rehearsal opens nothing (a new run, as far as it knows)."""
        return None

    def join(self) -> None:
        """No worker to start."""

    def leave(self) -> None:
        """No worker to release."""

    def close(self, status: str, error: str | None = None) -> None:
        """No run row to close."""

    def pin_model(self, version: str) -> str:
        """Keep the model version the rehearsal decides with (the champion's)."""
        if self._model is None:
            self._model = version
        return self._model

    def model_version(self) -> str | None:
        """The pinned model version (None before ``pin_model``)."""
        return self._model

    def pin_offered(self, offered: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """No run row: each rehearsed row keeps its variants."""
        return None

    def record_shards(self, shards: int) -> None:
        """Refuse: a rehearsal's run is never split into shards for workers."""
        raise RuntimeError(f"rehearsal {self.run_id}: a rehearsal never hands work to workers")

    def rows_written(self) -> int:
        """How many rows the rehearsal decided."""
        return len(self.rows)

    def recipients_done(self, recipient_ids: Sequence[str]) -> set[str]:
        """Those of ``recipient_ids`` this rehearsal decided already."""
        return {rid for rid in recipient_ids if rid in self.rows}

    def claim(self, rows: Sequence[dict[str, Any]]) -> tuple[Sequence[HeldRow], int]:
        """Keep each recipient's first row; the pending ones, and how many were skipped."""
        owned: list[HeldRow] = []
        skipped = 0
        for row in rows:
            if row["recipient_id"] in self.rows:
                continue  # unique per (run, recipient), as in the database
            self.rows[row["recipient_id"]] = dict(row)
            if row["status"] == LedgerStatus.SKIPPED:
                skipped += 1
                self.skip_reasons[str(row["skip_reason"])] += 1
            else:
                owned.append(LedgerRow(**row, id=TEST_SEND_ID))  # its links record nothing
        return owned, skipped

    def hand_over(self, messages: Sequence[Message]) -> list[Message]:
        """Every message stays held: nobody else works on a rehearsal."""
        return list(messages)

    def transmit(self, backend: DeliveryBackend, messages: Sequence[Message]) -> list[SendResult]:
        """Give ``messages`` to ``backend`` (a rehearsal's: ``WouldSend``)."""
        return backend.send(messages) if messages else []

    def record(self, results: Sequence[SendResult]) -> list[str]:
        """The state each row would reach."""
        return [str(STATUS_FOR[result.status]) for result in results]

    def fail(self, send_ids: Sequence[int], error: str, *, fixable: bool = False) -> None:
        """Nothing to mark: the error reaches the rehearsal's caller."""

    def reclaim_deferred(self, *, fixable: bool = False) -> list[LedgerRow]:
        """A rehearsal has no deferred rows."""
        return []

    def recover(self) -> int:
        """No dead workers to settle."""
        return 0

    def reconcile_unknown(self) -> int:
        """No unknown rows."""
        return 0

    def choices(self) -> dict[str, str]:
        """Each decided recipient's variant (``SKIPPED`` for a skip), by recipient id."""
        return {rid: row["variant"] or SKIPPED for rid, row in self.rows.items()}


class WouldSend(DeliveryBackend):
    """A backend that sends nothing: it notes each message as what would be sent."""

    name = "rehearsal"

    def __init__(self) -> None:
        """Nothing noted yet."""
        self.would_send: list[tuple[str, str, str]] = []  # to, variant, subject

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        """Note ``messages``; each counts as sent (it would be)."""
        for message in messages:
            variant = str(message.metadata["variant"])
            self.would_send.append((message.to_address, variant, message.subject))
        return [SendResult(message.send_id, SendStatus.SENT) for message in messages]


def _nobody(message: Message, result: SendResult) -> None:
    """No ``message_sent`` observer hears of a rehearsal."""


class Rehearsed:
    """The in-memory ledger and backend of one rehearsal, and the effects made of them."""

    def __init__(self, run_id: str) -> None:
        """Fresh, empty ones for run ``run_id``."""
        self.ledger = MemoryLedger(run_id)
        self.backend = WouldSend()

    def effects(self) -> RunEffects:
        """What the rehearsal's ``CampaignRun`` gets: these, no shards, no observers."""
        return RunEffects(
            ledger=self.ledger,
            backend=lambda: self.backend,
            shards=None,
            sent=_nobody,
            shares_recipe_fit=False,  # no run row exists to share a fit under
        )
