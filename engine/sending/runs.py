"""Campaign runs as the operator sees them: ids, which run a send resumes, what each run did.

Run ids: a scheduled tick is ``<campaign>@<YYYYmmddTHHMMSS>`` (stable, so a refired tick
resumes it); a manual send is ``<campaign>@manual-<YYYYmmddTHHMMSS>-<12 hex>``, unique even
for two sends in the same second and never equal to a tick's id.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import col, select

from engine.db import session_scope
from engine.errors import TailormailError
from engine.models import LedgerRow, LedgerStatus, RunRow, utcnow
from engine.sending.run_history import list_runs

SAMPLE_ADDRESSES = 3
"""How many addresses a summary shows for each skip reason or error."""


def manual_run_id(campaign: str, now: datetime | None = None) -> str:
    """A fresh id for a send started by hand."""
    moment = now or utcnow()
    return f"{campaign}@manual-{moment:%Y%m%dT%H%M%S}-{secrets.token_hex(6)}"


def _known_runs(db: SAEngine, campaign: str) -> str:
    recent = [r.run_id for r in list_runs(db, campaign, limit=5)]
    return ", ".join(recent) if recent else "none yet"


NEW_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9@._:+-]{0,127}")
"""What an id given to ``--new-run`` may be: it is shown in commands and logs, so a
word without spaces, slashes or quotes."""


def check_new_run_id(run_id: str) -> str:
    """``run_id`` when it may name a new run, else a ``TailormailError`` saying why."""
    if NEW_RUN_ID.fullmatch(run_id) is None:
        raise TailormailError(
            f"--new-run {run_id!r}: a run id is 1-128 letters, digits and . _ - + : @, "
            "starting with a letter or digit (no spaces, slashes or quotes)"
        )
    return run_id


def choose_run_id(
    db: SAEngine, campaign: str, *, resume: str | None = None, new: str | None = None
) -> str:
    """The run a ``send`` works on: a new one, unless ``resume`` names an existing run.

    ``resume`` must be a run of ``campaign`` that exists; ``new`` must not exist yet.
    """
    if resume is not None and new is not None:
        raise TailormailError("give either --run ID (resume) or --new-run ID (start), not both")
    run_id = resume or new
    if run_id is None:
        return manual_run_id(campaign)
    with session_scope(db) as session:
        existing = session.get(RunRow, run_id)
    if new is not None:
        check_new_run_id(new)
        if existing is not None:
            raise TailormailError(
                f"run {new!r} already exists (campaign {existing.campaign!r}); "
                f"resume it with --run {new}"
            )
        return new
    if existing is None:
        raise TailormailError(
            f"no run {run_id!r} to resume for campaign {campaign!r} "
            f"(recent runs: {_known_runs(db, campaign)}); "
            f"start a new run with that id with --new-run {run_id}"
        )
    if existing.campaign != campaign:
        raise TailormailError(
            f"run {run_id!r} belongs to campaign {existing.campaign!r}, not {campaign!r}"
        )
    return run_id


@dataclass
class Group:
    """Ledger rows sharing a status and a reason: how many, and the first few addresses."""

    status: str
    reason: str
    count: int
    addresses: list[str]


def run_breakdown(db: SAEngine, run_id: str) -> list[Group]:
    """Why rows of ``run_id`` in ``db`` were not sent: skips by reason, the rest by error."""
    wanted = (
        LedgerStatus.SKIPPED,
        LedgerStatus.DEFERRED,
        LedgerStatus.FAILED,
        LedgerStatus.UNKNOWN,
    )
    with session_scope(db) as session:
        stmt = (
            select(
                col(LedgerRow.status),
                col(LedgerRow.skip_reason),
                col(LedgerRow.error),
                col(LedgerRow.email),
            )
            .where(col(LedgerRow.run_id) == run_id)
            .where(col(LedgerRow.status).in_(wanted))
            .order_by(col(LedgerRow.id))
        )
        found = session.execute(stmt).all()
    groups: dict[tuple[str, str], Group] = {}
    for status, skip_reason, error, email in found:
        reason = (skip_reason if status == LedgerStatus.SKIPPED else error) or "no reason given"
        group = groups.setdefault((status, reason), Group(status, reason, 0, []))
        group.count += 1
        if len(group.addresses) < SAMPLE_ADDRESSES:
            group.addresses.append(email)
    order = {status: i for i, status in enumerate(wanted)}
    return sorted(groups.values(), key=lambda g: (order[g.status], -g.count, g.reason))
