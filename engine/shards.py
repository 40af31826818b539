"""Shards: a large run split into keyset ranges of its audience, sent by worker processes.

The run's coordinator (the process that runs ``tailormail send`` or the scheduler job)
opens the run, pins its model version, cuts the audience into ranges of about
``workers.shard_size`` ids and submits one ``run_shard`` per range to the configured
executor (``local``: a process pool; ``celery``: ``tailormail worker`` processes). Each
shard is a ledger worker of its own (lease, journal), so a retried or duplicated shard
sends nobody twice and a dead worker's rows are settled by whoever comes next. After the
shards, the coordinator sends whatever is left itself: nothing is lost when a shard is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from concurrent.futures import Future, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.audience import shard_bounds
from engine.errors import ConfigError

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.pipeline import CampaignRun, Progress, RunSummary

log = logging.getLogger(__name__)

_ENGINES: dict[str, Engine] = {}

# The counts of a run's summary that together cover each ledger row it saw once
# (``retried`` rows are counted again by their new outcome).
ROW_COUNTS = ("already_done", "skipped", "sent", "deferred", "failed", "unknown")


def secret_check(secret: bytes) -> str:
    """A fingerprint of the link secret that does not reveal it."""
    return hashlib.sha256(b"tailormail shard secret check\0" + secret).hexdigest()[:16]


def shard_payload(engine: Engine) -> dict[str, Any]:
    """What a worker needs to build the same engine: the settings as JSON, without the
    secret (a worker takes it from its own environment or the project's secret file),
    plus a fingerprint of it, so a worker with another secret refuses to sign links."""
    payload = engine.settings.model_dump(mode="json", exclude={"secret"})
    payload["secret_check"] = secret_check(engine.secret)
    return payload


def worker_engine(payload: dict[str, Any]) -> Engine:
    """The engine for ``payload``'s settings, built once per worker process."""
    from engine.app import Engine
    from engine.settings import load_settings

    key = json.dumps(payload, sort_keys=True)
    engine = _ENGINES.get(key)
    if engine is None:
        overrides = {k: v for k, v in payload.items() if k not in ("project_dir", "secret_check")}
        settings = load_settings(project_dir=Path(payload["project_dir"]), overrides=overrides)
        engine = Engine(settings=settings)
        if secret_check(engine.secret) != payload.get("secret_check"):
            engine.close()
            raise ConfigError(
                "this worker's link secret differs from the coordinator's: give every "
                "process of a project the same TAILORMAIL_SECRET (or secret file)"
            )
        _ENGINES[key] = engine
    return engine


def run_shard(
    payload: dict[str, Any], campaign: str, run_id: str, after: str, until: str | None
) -> dict[str, Any]:
    """A worker's task: send run ``run_id``'s recipients with ``after < id <= until``.

    Returns the shard's counts (plain JSON, for any executor)."""
    from engine.pipeline import CampaignRun

    engine = worker_engine(payload)
    run = CampaignRun(engine, engine.campaign(campaign), run_id)
    summary = run.execute_shard((after, until))
    return dataclasses.asdict(summary)


def _add(summary: RunSummary, counts: dict[str, Any]) -> None:
    for name in ROW_COUNTS:
        setattr(summary, name, getattr(summary, name) + int(counts.get(name, 0)))
    for key, n in counts.get("variants", {}).items():
        summary.variants[key] = summary.variants.get(key, 0) + int(n)


def run_shards(
    run: CampaignRun, progress: Progress | None, shard_progress: Progress | None = None
) -> None:
    """Coordinate run ``run``'s shards on the configured executor, adding their counts to
    the run's summary and reporting ``shard_progress(done, shards)``; returns when every
    shard finished, or when the ledger has not moved for ``workers.stall_seconds`` (the
    caller then sends what is left)."""
    engine = run.engine
    workers = engine.settings.workers
    bounds = shard_bounds(engine.db, run.campaign.audience, workers.shard_size)
    run.ledger.record_shards(len(bounds))
    run.summary.shards = len(bounds)
    payload = shard_payload(engine)
    executor = engine.executor(workers.executor, workers=workers)
    stalled = False
    try:
        futures: list[Future[dict[str, Any]]] = [
            executor.submit(run_shard, payload, run.campaign.name, run.run_id, after, until)
            for after, until in bounds
        ]
        log.info("run %s: %d shards on %s", run.run_id, len(futures), workers.executor)
        seen, moved = -1, time.monotonic()
        while True:
            done, pending = wait(futures, timeout=0.5)
            rows = run.ledger.rows_written()
            if progress:
                progress(rows, run.summary.audience)
            if shard_progress:
                shard_progress(len(done), len(futures))
            if not pending:
                break
            if rows != seen:
                seen, moved = rows, time.monotonic()
            elif time.monotonic() - moved > workers.stall_seconds:
                stalled = True
                log.warning(
                    "run %s: %d shards made no progress for %.0f s; sending the rest here",
                    run.run_id,
                    len(pending),
                    workers.stall_seconds,
                )
                break
        for future in futures:
            if not future.done():
                continue
            try:
                _add(run.summary, future.result())
            except Exception as exc:  # the coordinator sends what the shard left
                reason = f"{type(exc).__name__}: {exc}"
                errors = run.summary.shard_errors
                errors[reason] = errors.get(reason, 0) + 1
                log.warning("run %s: a shard failed (%s)", run.run_id, reason)
    finally:
        executor.shutdown(wait=not stalled, cancel_futures=True)
