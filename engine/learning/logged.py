"""Logged decisions: what off-policy evaluation and training read, from the ledger or a file.

A ``LoggedDecision`` is one rewarded decision: the context, the variants as offered, the
chosen one with the probability it had, and the reward. The ledger and the files
``tailormail export`` writes (plain JSONL and VW DSJSON) give the same values in the same
order, so evaluating either gives the same estimates.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlmodel import col

from engine.errors import TailormailError
from engine.learning.export import rewarded_decisions
from engine.models import LedgerRow, row_offered
from engine.types import Variant
from engine.variants import variants_from_offered

if TYPE_CHECKING:
    from engine.app import Engine


@dataclass(frozen=True)
class LoggedDecision:
    """One rewarded decision as the logging policy made it."""

    decision_id: str
    context: dict[str, Any]
    variants: list[Variant]
    chosen: str
    probability: float
    reward: float
    pmf: dict[str, float]
    ledger_id: int | None = None
    sent_at: datetime | None = None
    policy: str | None = None
    arm: str | None = None
    shadow_pmf: dict[str, float] | None = None  # apprentice mode: the policy's own pmf


class DecisionFields(Protocol):
    """The ledger columns a logged decision is made of: a ``LedgerRow``, or a row selected
    with ``DECISION_COLUMNS`` (learning reads no more than these)."""

    @property
    def id(self) -> int | None: ...
    @property
    def decision_id(self) -> str: ...
    @property
    def variant(self) -> str | None: ...
    @property
    def probability(self) -> float | None: ...
    @property
    def pmf(self) -> dict[str, float] | None: ...
    @property
    def offered(self) -> list[dict[str, Any]] | None: ...
    @property
    def context(self) -> dict[str, Any] | None: ...
    @property
    def policy(self) -> str | None: ...
    @property
    def sent_at(self) -> datetime | None: ...
    @property
    def arm(self) -> str | None: ...
    @property
    def shadow(self) -> dict[str, Any] | None: ...


DECISION_COLUMNS = tuple(
    row_offered() if name == "offered" else col(getattr(LedgerRow, name))
    for name, member in vars(DecisionFields).items()
    if isinstance(member, property)
)
"""What ``from_row`` reads: selecting these, not whole rows, skips the rendered links."""


def usable(row: DecisionFields) -> bool:
    """True when the row logged a pmf holding its chosen variant (off-policy needs both)."""
    return bool(row.pmf) and row.variant in (row.pmf or {}) and bool(row.probability)


def from_row(row: DecisionFields, reward: float, today: Iterable[Variant] = ()) -> LoggedDecision:
    """The logged decision of one ledger row; old rows without offered variants use
    ``today`` restricted to the pmf's keys (what the policy saw then)."""
    keys = list(row.pmf or {})
    fallback = [v for v in today if v.key in keys] or [Variant(k, "", "", {}) for k in keys]
    return LoggedDecision(
        decision_id=row.decision_id,
        context=dict(row.context or {}),
        variants=variants_from_offered(row.offered, fallback),
        chosen=str(row.variant),
        probability=float(row.probability or 0.0),
        reward=float(reward),
        pmf=dict(row.pmf or {}),
        ledger_id=row.id,
        sent_at=row.sent_at,
        policy=row.policy,
        arm=row.arm,
        shadow_pmf=dict(row.shadow["pmf"]) if row.shadow and row.shadow.get("pmf") else None,
    )


def from_ledger(engine: Engine, campaign: str, newest: int | None = None) -> list[LoggedDecision]:
    """Every usable rewarded decision of ``campaign``, oldest first (as ``export`` writes),
    or only the ``newest`` ones (read in chunks, so memory stays bounded by ``newest``)."""
    today = engine.campaign(campaign).variant_list
    kept: deque[LoggedDecision] = deque(maxlen=newest)
    for row, reward in rewarded_decisions(engine.db, campaign):
        if usable(row):
            kept.append(from_row(row, reward, today))
    return list(kept)


def _from_jsonl(record: dict[str, Any]) -> LoggedDecision:
    offered = record.get("offered") or [{"key": key} for key in record["actions"]]
    return LoggedDecision(
        decision_id=str(record.get("decision_id", "")),
        context=dict(record.get("context") or {}),
        variants=variants_from_offered(offered, []),
        chosen=str(record["chosen"]),
        probability=float(record["probability"]),
        reward=float(record["reward"]),
        pmf={str(k): float(p) for k, p in (record.get("pmf") or {}).items()},
        policy=record.get("policy"),
    )


def _from_dsjson(record: dict[str, Any]) -> LoggedDecision:
    shared = record["c"]
    context: dict[str, Any] = {}
    for namespace, values in shared.items():
        if namespace == "U":
            context.update(values)
        elif namespace.startswith("U_"):
            context[namespace[2:]] = dict(values)
    variants = []
    for action in shared["_multi"]:
        features = dict(action.get("A") or {})
        key = str(features.pop("key"))
        variants.append(Variant(key, "", "", features))
    return LoggedDecision(
        decision_id=str(record.get("EventId", "")),
        context=context,
        variants=variants,
        chosen=variants[int(record["_labelIndex"])].key,
        probability=float(record["_label_probability"]),
        reward=-float(record["_label_cost"]),
        pmf={
            variants[int(a) - 1].key: float(p)
            for a, p in sorted(zip(record["a"], record["p"], strict=True))
        },
    )


def read_log(path: Path) -> list[LoggedDecision]:
    """The decisions of an exported log file, JSONL or DSJSON (told apart per line).

    A line that is not a logged decision is an error naming the file and line.
    """
    decisions: list[LoggedDecision] = []
    try:
        lines: Iterator[str] = iter(path.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError) as exc:
        raise TailormailError(f"{path}: cannot read the log: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            parse = _from_dsjson if "_label_cost" in record else _from_jsonl
            decision = parse(record)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise TailormailError(
                f"{path}:{number}: not a logged decision in JSONL or DSJSON "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        if not 0.0 < decision.probability <= 1.0:
            raise TailormailError(
                f"{path}:{number}: logged probability {decision.probability!r} not in (0, 1]"
            )
        decisions.append(decision)
    if not decisions:
        raise TailormailError(f"{path}: no logged decisions in the file")
    return decisions
