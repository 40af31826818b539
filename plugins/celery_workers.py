"""The ``celery`` executor and ``tailormail worker``: a run's shards on Celery workers.

With ``workers.executor = "celery"`` a large run's coordinator sends each shard as a
``tailormail.run_shard`` task to the broker (Redis by default), and ``tailormail worker``
processes on any machine that reaches the database and the broker send them. Tasks are
acknowledged late and rejected when their worker is lost, so a shard whose worker dies is
delivered again (after ``visibility_timeout_seconds`` on Redis); the ledger makes a
repeated shard send nobody twice. Only ``run_shard`` can be sent: the broker never carries
code or a callable's name, and Celery's built-in tasks and remote control are off.

The broker is a trust boundary (docs/security.md): a worker builds its engine from its
own project (``-p PROJECT``) and environment, and a task only names a part of an open run,
signed with the project secret (``engine.sending.shard_tasks``). A task that fails its checks is
refused in one log line and acknowledged, never retried; its coordinator reports it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Annotated, Any

import typer

from engine import hookimpl
from engine.cli.support import ProjectOption, open_engine
from engine.errors import ConfigError, TailormailError
from engine.sending.real_run import real_run
from engine.sending.shard_tasks import ShardRefused
from engine.sending.shards import ShardHost, refuse, run_shard

if TYPE_CHECKING:
    from celery import Celery

    from engine.settings import CelerySettings, WorkersSettings

TASK = "tailormail.run_shard"


def celery_app(config: CelerySettings, host: ShardHost | None = None) -> Celery:
    """A Celery app for ``config``; with ``host`` (a worker's), the shard task registered
    as the only task, sending with ``host``'s engine."""
    try:
        from celery import Celery
    except ImportError as exc:  # an optional dependency
        raise ConfigError(
            "workers.executor = 'celery' needs Celery: pip install 'tailormail[celery]'"
        ) from exc
    app = Celery("tailormail", broker=config.broker_url, backend=config.result_backend)
    app.conf.update(
        task_acks_late=True,  # a shard is acknowledged once sent, not when received
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a worker holds one shard it is not working on
        task_default_queue=config.queue,
        broker_transport_options={"visibility_timeout": config.visibility_timeout_seconds},
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=86400,
        worker_enable_remote_control=False,  # no broker writer may shut down or reconfigure it
        worker_send_task_events=False,
    )
    if host is not None:
        _register_shard_task(app, host)
    return app


def _register_shard_task(app: Celery, host: ShardHost) -> None:
    """Register ``run_shard`` on ``host`` as the worker's only task."""

    def shard_task(*args: Any, **kwargs: Any) -> dict[str, Any]:
        if len(args) != 1 or kwargs:  # another shape: an older release's task, or forged
            refuse(f"malformed task: {len(args)} arguments and {len(kwargs)} keyword arguments")
        return run_shard(args[0], host)

    # ``throws``: a refusal is logged by Celery as expected, in one line, not a traceback.
    app.task(name=TASK, throws=(ShardRefused,))(shard_task)
    app.finalize()
    for name in [name for name in app.tasks if name != TASK]:
        app.tasks.unregister(name)  # Celery's built-ins (chains, chords): not ours to run


class CeleryExecutor(Executor):
    """``submit(run_shard, ...)`` sends a task; its future completes with the task."""

    def __init__(self, workers: WorkersSettings, **_pool: Any) -> None:
        """``_pool`` (a pool's initializer) is not for here: workers load their project."""
        self.app = celery_app(workers.celery)
        self.queue = workers.celery.queue
        self._waiting: list[tuple[Any, Future[Any]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="tailormail-celery", daemon=True)
        self._poller.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Send ``run_shard(*args)`` to the workers (any other callable is refused)."""
        if fn is not run_shard:
            raise TypeError("the celery executor runs shards of a run (run_shard) only")
        # kombu comes with celery, an optional dependency: imported where it is used.
        from kombu.exceptions import OperationalError
        from kombu.utils.url import maybe_sanitize_url

        try:
            result = self.app.send_task(TASK, args=list(args), kwargs=kwargs, queue=self.queue)
        except OperationalError as exc:  # kombu's, after its own publish retries
            broker = maybe_sanitize_url(str(self.app.conf.broker_url))
            raise TailormailError(
                f"cannot reach the Celery broker {broker} ([workers.celery] broker_url): "
                f"{str(exc).rstrip('.')}; start it, or send without workers "
                '([workers] executor = "local")'
            ) from None
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            self._waiting.append((result, future))
        return future

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                waiting = list(self._waiting)
            for result, future in waiting:
                try:
                    if not result.ready():
                        continue
                    if result.successful():
                        future.set_result(result.result)
                    elif isinstance(result.result, TailormailError):  # a refusal, as raised
                        future.set_exception(result.result)
                    else:
                        future.set_exception(RuntimeError(f"shard failed: {result.result!r}"))
                except Exception as exc:  # the result backend is unreachable: keep trying
                    if isinstance(exc, ConnectionError):
                        continue
                    future.set_exception(exc)
                with self._lock:
                    self._waiting.remove((result, future))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop following the tasks (tasks already sent still run on the workers)."""
        if wait:
            while True:
                with self._lock:
                    if not self._waiting:
                        break
                self._stop.wait(0.2)
        self._stop.set()
        self._poller.join(timeout=5)


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


@hookimpl
def register_executors(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register ``celery``."""
    register("celery", CeleryExecutor)


@hookimpl
def register_commands(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register ``tailormail worker``."""
    register("worker", worker)
