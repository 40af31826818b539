"""Shards: a large run split into keyset ranges of its audience, sent by worker processes.

The run's coordinator (the process that runs ``tailormail send`` or the scheduler job)
opens the run, pins its model version, cuts the audience into ranges of about
``workers.shard_size`` ids and submits one signed ``run_shard`` task per range to the
configured executor (``thread``: threads sharing the coordinator's engine; ``local``: a
process pool; ``celery``: ``tailormail worker`` processes). A worker obeys only its own
project: it builds its engine from its project directory and environment (handed to a
pool's workers by their initializer, never in a task) and refuses any task that is not
signed with the project secret, does not match it, or names a run that is not open
(``engine.sending.shard_tasks``). Each shard is a ledger worker of its own (lease, journal), so a
retried or duplicated shard sends nobody twice and a dead worker's rows are settled by
whoever comes next. After the shards, the coordinator sends whatever is left itself:
nothing is lost when a shard is, or is refused.

This module never builds a run itself: a worker's ``ShardHost`` carries the run factory
the coordinator was given (``engine.sending.real_run.real_run`` for a real run), so the
shard's run has the same effects, composed by the same function, as its coordinator's.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from engine.audience.filters import shard_bounds
from engine.errors import ConfigError
from engine.sending.shard_tasks import ShardRefused, ShardTask, sign_task, verify_task

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.campaigns import Campaign
    from engine.sending.pipeline import CampaignRun, Progress, RunSummary

log = logging.getLogger(__name__)

# The counts of a run's summary that together cover each ledger row it saw once
# (``retried`` rows are counted again by their new outcome).
ROW_COUNTS = ("already_done", "skipped", "sent", "deferred", "failed", "unknown")

RunFactory = Callable[["Engine", "Campaign", str], "CampaignRun"]
"""Builds run ``run_id`` of a campaign with its effects (``engine.sending.real_run.real_run``);
a module-level function, so that a ``ShardHost`` holding it pickles."""


class ShardHost:
    """Where a shard worker gets its engine and how it builds the shard's run.

    The engine is the coordinator's own in threads of its process, or, in a process of its
    own (this object pickled: the engine stays behind), one built once from the project
    directory and that process's environment. ``make_run`` builds the run a shard sends
    (with its effects); it travels with the host, never in a task.
    """

    def __init__(
        self,
        project_dir: Path,
        make_run: RunFactory,
        load_entry_points: bool = True,
        engine: Engine | None = None,
    ) -> None:
        """``engine``: the coordinator's, shared by shards run in its own process."""
        self.project_dir = project_dir
        self.make_run = make_run
        self.load_entry_points = load_entry_points
        self._engine = engine
        self._lock = threading.Lock()  # a threads pool's shards build one engine, not one each

    @classmethod
    def of(cls, engine: Engine, make_run: RunFactory) -> ShardHost:
        """The host of ``engine``'s shards: its project, and itself in its own process."""
        return cls(engine.settings.project_dir, make_run, engine.load_entry_points, engine)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "project_dir": self.project_dir,
            "make_run": self.make_run,
            "load_entry_points": self.load_entry_points,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def engine(self) -> Engine:
        """The engine this worker sends with (built at the first shard)."""
        # lazy: a plugin module (celery_workers) imports this one, and the Engine brings
        # most of tailormail: every command would load it to register its plugins
        from engine.app import Engine

        with self._lock:
            if self._engine is None:
                self._engine = Engine(
                    project_dir=self.project_dir, load_entry_points=self.load_entry_points
                )
            return self._engine


_here = threading.local()


def refuse(reason: str) -> NoReturn:
    """Log a refused shard task in one line, naming why, and raise ``ShardRefused``."""
    log.warning("refused a shard task: %s", reason)
    raise ShardRefused(reason)


def serve_shards(host: ShardHost) -> None:
    """A pool's initializer: this thread (a pool thread, or a pool process's) runs the
    shards of ``host``'s project."""
    _here.host = host


def run_shard(task: object, host: ShardHost | None = None) -> dict[str, Any]:
    """A worker's task: send the part of a run that the signed ``task`` names, with the
    engine of ``host`` (default: the one ``serve_shards`` gave this thread).

    Returns the shard's counts (plain JSON, for any executor). A task that fails its
    checks is refused (``ShardRefused``, logged in one line) before anything is written.
    """
    host = host or getattr(_here, "host", None)
    if host is None:
        refuse("this worker serves no project: its pool did not run the shard initializer")
    engine = host.engine()
    try:
        shard = verify_task(engine, task)
        campaign = engine.campaign(shard.campaign)
    except (ShardRefused, ConfigError) as exc:
        refuse(str(exc))
    run = host.make_run(engine, campaign, shard.run_id)
    summary = run.execute_shard((shard.after, shard.until))
    return dataclasses.asdict(summary)


def _add(summary: RunSummary, counts: dict[str, Any]) -> None:
    for name in ROW_COUNTS:
        setattr(summary, name, getattr(summary, name) + int(counts.get(name, 0)))
    for key, n in counts.get("variants", {}).items():
        summary.variants[key] = summary.variants.get(key, 0) + int(n)


def run_shards(
    run: CampaignRun,
    progress: Progress | None,
    shard_progress: Progress | None,
    make_run: RunFactory,
) -> None:
    """Coordinate run ``run``'s shards on the configured executor, adding their counts to
    the run's summary and reporting ``shard_progress(done, shards)``; returns when every
    shard finished, or when the ledger has not moved for ``workers.stall_seconds`` (the
    caller then sends what is left). Each worker builds its shard's run with ``make_run``."""
    engine = run.engine
    workers = engine.settings.workers
    bounds = shard_bounds(engine.db, run.campaign.audience, workers.shard_size)
    run.ledger.record_shards(len(bounds))
    run.summary.shards = len(bounds)
    pinned = run.ledger.model_version()
    tasks = [
        sign_task(engine, ShardTask(run.run_id, run.campaign.name, after, until, pinned))
        for after, until in bounds
    ]
    # Each pool thread or process learns its project here, never from a task.
    host = ShardHost.of(engine, make_run)
    executor = engine.executor(
        workers.executor, workers=workers, initializer=serve_shards, initargs=(host,)
    )
    stalled = False
    try:
        futures: list[Future[dict[str, Any]]] = [executor.submit(run_shard, t) for t in tasks]
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
