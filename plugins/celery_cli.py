"""``tailormail worker``: a Celery worker sending the shards of large runs.

Loaded by the command line only, when ``worker`` runs (``plugins.celery_workers``
registers it by path), so the executor's module stays light for every other process.
"""

from __future__ import annotations

from typing import Annotated

import typer

from engine.cli.support import ProjectOption, open_engine
from engine.sending.real_run import real_run
from engine.sending.shards import ShardHost
from plugins.celery_workers import celery_app


def worker(
    concurrency: Annotated[
        int, typer.Option(help="Shards sent at once (processes; 0: one per core).")
    ] = 0,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork, solo or threads.")] = "prefork",
    project: ProjectOption = None,
) -> None:
    """Start a Celery worker that sends the shards of large runs (workers.executor = celery).

    It works for its own project only: the engine comes from ``-p PROJECT`` and this
    process's environment, and a task names nothing but a part of an open run, signed."""
    with open_engine(project) as engine:  # a broken project stops here, not at the first task
        config = engine.settings.workers.celery
        host = ShardHost(engine.settings.project_dir, real_run)
    app = celery_app(config, host)
    argv = ["worker", f"--pool={pool}", "-Q", config.queue, "--loglevel=INFO"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    app.worker_main(argv)
