"""The ledger as a logged-bandit data set: plain JSONL, or Vowpal Wabbit's DSJSON.

Each rewarded decision becomes one record: the context, the actions that were offered
(the pmf's keys, in the order the policy saw them), the chosen one, the probability it
had, and the reward. That is everything off-policy evaluation and retraining need.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import col, select

from engine.audience import personal_files
from engine.db import session_scope
from engine.errors import TailormailError
from engine.models import LedgerRow, RewardRow, VariantRow, row_offered

if TYPE_CHECKING:
    from engine.app import Engine

FORMATS = ("jsonl", "dsjson")
_CHUNK = 1000


def rewarded_decisions(db: SAEngine, campaign: str) -> Iterator[tuple[LedgerRow, float]]:
    """Every decision of ``campaign`` with its reward, oldest first, read in chunks; each
    row's ``offered`` is its own or its run's (``row_offered``), never written back."""
    last = 0
    while True:
        stmt = (
            select(LedgerRow, col(RewardRow.reward), row_offered())
            .join(RewardRow, col(RewardRow.send_id) == col(LedgerRow.id))
            .where(col(LedgerRow.campaign) == campaign)
            .where(col(LedgerRow.id) > last)
            .order_by(col(LedgerRow.id))
            .limit(_CHUNK)
        )
        with session_scope(db) as session:
            found = session.execute(stmt).all()
        batch = []
        for row, reward, offered in found:  # detached now: setting a value writes nothing
            row.offered = offered
            batch.append((row, float(reward)))
        yield from batch
        if len(batch) < _CHUNK:
            return
        last = int(batch[-1][0].id or 0)


def _variant_features(db: SAEngine, campaign: str) -> dict[str, dict[str, Any]]:
    with session_scope(db) as session:
        rows = session.scalars(select(VariantRow).where(col(VariantRow.campaign) == campaign))
        return {row.key: dict(row.features or {}) for row in rows}


def jsonl_record(row: LedgerRow, reward: float) -> dict[str, Any]:
    """The plain logged-bandit record of one decision."""
    return {
        "decision_id": row.decision_id,
        "run_id": row.run_id,
        "recipient_id": row.recipient_id,
        "timestamp": row.sent_at.isoformat() if row.sent_at else None,
        "context": row.context or {},
        "actions": list((row.pmf or {}).keys()),
        "chosen": row.variant,
        "probability": row.probability,
        "pmf": row.pmf or {},
        "offered": row.offered,
        "reward": reward,
        "policy": row.policy,
        "model_version": row.model_version,
        "items": row.items or [],
    }


def _namespaces(context: dict[str, Any]) -> dict[str, Any]:
    """Top-level features in namespace ``U``, a nested dict ``geo`` in ``U_geo``: the same
    namespaces the ``vw`` policy uses, so an exported set trains a compatible model."""
    shared: dict[str, Any] = {"U": {}}
    for key, value in context.items():
        if isinstance(value, dict):
            shared[f"U_{key}"] = dict(value)
        else:
            shared["U"][key] = value
    return shared


def dsjson_record(
    row: LedgerRow, reward: float, features: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """One decision in VW's DSJSON (read with ``--dsjson --cb_explore_adf``).

    VW minimises cost, so the cost is ``-reward``; actions are numbered from 1 in the order
    they were offered, and ``a``/``p`` list the chosen action first.
    """
    pmf = row.pmf or {}
    keys = list(pmf)
    if row.offered:  # the features as offered then, not as configured today
        features = {str(v["key"]): dict(v.get("features") or {}) for v in row.offered}
    index = keys.index(row.variant or "")
    order = [index] + [i for i in range(len(keys)) if i != index]
    stamp = row.sent_at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if row.sent_at else None
    return {
        "_label_cost": -reward,
        "_label_probability": row.probability,
        "_label_Action": index + 1,
        "_labelIndex": index,
        "Timestamp": stamp,
        "Version": "1",
        "EventId": row.decision_id,
        "a": [i + 1 for i in order],
        "c": _namespaces(row.context or {})
        | {"_multi": [{"A": {"key": key} | features.get(key, {})} for key in keys]},
        "p": [pmf[keys[i]] for i in order],
        "VWState": {"m": row.model_version or "N/A"},
    }


def export_decisions(engine: Engine, campaign: str, fmt: str, out: IO[str]) -> int:
    """Write every rewarded decision of ``campaign`` to ``out``; return how many."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (use {' or '.join(FORMATS)})")
    engine.campaign(campaign)  # an unknown campaign is an error, not an empty file
    features = _variant_features(engine.db, campaign)
    count = 0
    for row, reward in rewarded_decisions(engine.db, campaign):
        if not row.pmf or row.variant not in row.pmf:
            continue  # a decision without a logged pmf cannot be used off-policy
        record = (
            jsonl_record(row, reward) if fmt == "jsonl" else dsjson_record(row, reward, features)
        )
        out.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        count += 1
    return count


def export_to_file(engine: Engine, campaign: str, fmt: str, path: Path) -> int:
    """``export -o``: write the decisions to ``path``, owner-only (0600: it holds recipient
    ids and contexts), registered so that ``forget`` removes a person's lines from it."""
    engine.campaign(campaign)  # an unknown campaign creates no file
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise TailormailError(f"export -o {path}: cannot write it ({exc.strerror})") from None
    os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
    personal_files.note(engine.db, personal_files.EXPORT, [path])
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        return export_decisions(engine, campaign, fmt, handle)
