"""The Celery broker's task rate: how many tasks a second go from a coordinator through
Redis to a ``solo`` worker and back as results, with the executor's own Celery settings
(``plugins.celery_workers.celery_app``: late acknowledgement, prefetch 1, JSON).

A run sends one task per shard (``[workers] shard_size`` recipients, 5,000 by default),
so a 10,000,000-recipient run is 2,000 tasks: docs/scaling.md sets this rate against the
shards a run needs. Each task here does nothing, so the figure is the broker's and
Celery's own cost per task, the most a worker pool could ask of them.

    python bench/broker_rate.py                  # 2,000 tasks, 1 and 2 workers
    python bench/broker_rate.py --tasks 500 --json broker.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOOP = "bench.noop"


def app_for(queue: str) -> Any:
    """The executor's Celery app on ``queue``, with a task that does nothing."""
    from engine.settings import CelerySettings
    from plugins.celery_workers import celery_app

    app = celery_app(CelerySettings(queue=queue))
    app.task(name=NOOP)(noop)
    return app


def noop(n: int) -> int:
    """The task: nothing but its own round trip."""
    return n


def worker(queue: str) -> None:
    """A ``solo`` Celery worker on ``queue`` (the pool ``tailormail worker`` uses)."""
    app_for(queue).worker_main(
        [
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "WARNING",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
        ]
    )


def measure(tasks: int, workers: int) -> dict[str, float]:
    """Send ``tasks`` no-op tasks to ``workers`` workers; tasks per second, sent to all
    results read, and the mean round trip of one task alone."""
    queue = f"tm-bench-broker-{uuid.uuid4().hex[:8]}"
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", queue],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    try:
        app = app_for(queue)
        app.send_task(NOOP, args=[0], queue=queue).get(timeout=60)  # workers are up
        lone = []
        for n in range(20):
            start = time.perf_counter()
            app.send_task(NOOP, args=[n], queue=queue).get(timeout=60)
            lone.append(time.perf_counter() - start)
        start = time.perf_counter()
        results = [app.send_task(NOOP, args=[n], queue=queue) for n in range(tasks)]
        for result in results:
            result.get(timeout=120)
        elapsed = time.perf_counter() - start
        return {
            "tasks_per_s": tasks / elapsed,
            "round_trip_ms": 1000 * sum(lone) / len(lone),
        }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per measurement")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    if args.tasks < 1:
        raise SystemExit("--tasks: give a positive number of tasks")
    from rich.console import Console
    from rich.table import Table

    figures: dict[str, Any] = {"load": os.getloadavg()[0], "tasks": args.tasks}
    for workers in (1, 2):
        figures[str(workers)] = measure(args.tasks, workers)
    figures["load_after"] = os.getloadavg()[0]
    table = Table(
        title=f"Celery on Redis, {args.tasks:,} no-op tasks (load {figures['load']:.1f} -> "
        f"{figures['load_after']:.1f})"
    )
    for column in ("workers", "tasks/s", "one task's round trip ms"):
        table.add_column(column, justify="right")
    for workers in ("1", "2"):
        f = figures[workers]
        table.add_row(workers, f"{f['tasks_per_s']:,.0f}", f"{f['round_trip_ms']:.1f}")
    Console().print(table)
    for workers in ("1", "2"):
        for key, value in figures[workers].items():
            print(f"broker.{workers}.{key} {value:.3f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
