"""The send ledger: every state change of a ledger row, in one place.

One row per (run, recipient), unique, inserted before its message is rendered. A row
changes state only here, through named transitions (``RunLedger``'s methods, the
settling in ``recovery``, ``reconcile.settle_unknown``), each guarded on the state it
leaves and, while a worker holds the row, on that worker (its lease). The modules:
``transitions`` (``RunLedger``), ``recovery`` (settling stopped or dead workers' rows,
reconciling unknown ones from the backend), ``reconcile`` (unknown ones from provider
events), ``journal`` (the hand-over journal), ``lease`` (workers, leases), ``statements``
(the guarded SQL).

```
 (none) --claim--> skipped                                  (final: no decision logged)
 (none) --claim--> pending --hand_over--> handed_over --record--> sent | failed (final)
                    |  ^                      |    +--record--> unknown  (never resent)
                    |  |                      |    +--record--> deferred
                    |  |                      |                  |
                    |  +--reclaim_deferred----+------------------+ (retried, same decision)
                    |                         |
                    +--fail--> failed         +--settle--> unknown (was in flight)
                    +--settle--> deferred     +--settle--> deferred (journal: never handed)
                                              +--settle--> sent | failed (journal: answered)
 unknown --reconcile_unknown--> sent | deferred        (a backend that can tell: outbox)
 unknown --settle_unknown-----> sent | failed          (a provider's event: reconcile.py)
```

- ``pending``: claimed under a worker's lease (owner and expiry), not yet with the
  transport: safe to send again.
- ``handed_over``: committed before the batch goes to the backend; the worker's journal
  (``engine.ledger.journal``) says, message by message, which ones actually reached the
  transport and what it answered.
- ``sent`` / ``failed`` are final, except a row ``fail`` marked fixable (its message was
  never built: a template or configuration error, ``failure = "fixable"``), which a resumed
  run takes back to ``pending`` like a deferred one; ``deferred`` (a temporary failure, or
  never left) is retried with the same decision when the run resumes (back to ``pending``
  through ``reclaim_deferred``); ``unknown`` (the transport may or may not have it) is never
  resent blindly, only reconciled (from the backend's own records, or later from
  provider events by message id).

When a worker stops (``close``, or an exception from the backend) or dies (another
worker's ``recover``: at once on the same host, when its lease expires elsewhere), each
row it held settles by ``fate``: pending -> deferred; handed_over -> the outcome its
journal recorded, else unknown if in flight, else deferred.
"""

from __future__ import annotations

from engine.ledger.journal import Journal, JournalState
from engine.ledger.lease import Worker
from engine.ledger.recovery import Fate, fate
from engine.ledger.statements import STATUS_FOR
from engine.ledger.transitions import RunLedger

__all__ = [
    "STATUS_FOR",
    "Fate",
    "Journal",
    "JournalState",
    "RunLedger",
    "Worker",
    "fate",
]
