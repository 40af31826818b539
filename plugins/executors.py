"""Built-in executors: ``inline`` (the calling thread), ``thread`` (a thread pool) and
``local`` (a process pool sized to the cores, for the shards of large runs).

Executors are ``concurrent.futures`` executors. The engine uses one to render and send a
batch (``executor`` in the settings) and, for runs larger than ``workers.shard_size``,
one to run shards (``workers.executor``: called with ``workers=`` the workers settings and
``initializer``/``initargs``, which each of its threads or processes must run once before
its first shard: they tell it which project it works for, as ``concurrent.futures`` pools
take them).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, TypeVar

from engine import hookimpl

T = TypeVar("T")


class InlineExecutor(Executor):
    """Runs every task at once in the caller's thread: simple, ordered, easy to debug."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn`` now and return a completed future."""
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # the future carries it, as a pool's would
            future.set_exception(exc)
        return future

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any], **_: Any) -> Iterator[T]:
        """Apply ``fn`` lazily, in order."""
        return map(fn, *iterables)


def thread_pool(
    max_workers: int = 0,
    workers: Any = None,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
) -> ThreadPoolExecutor:
    """A pool of ``max_workers`` (or ``workers.processes``, else 4) threads; rendering
    releases the GIL rarely, delivery often (network I/O). Shards run in its threads
    share the coordinator's engine (its initializer hands it over)."""
    size = max_workers or (workers.processes if workers is not None else 0) or 4
    return ThreadPoolExecutor(
        max_workers=size,
        thread_name_prefix="tailormail",
        initializer=initializer,
        initargs=initargs,
    )


def local_pool(
    max_workers: int = 0,
    workers: Any = None,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
) -> ProcessPoolExecutor:
    """A process pool of ``workers.processes`` (or ``max_workers``) processes, one per core
    when 0. Processes are spawned, not forked: each builds its own engine from the project
    directory its initializer names (and its own environment), with its own database
    connections, and inherits no lock or connection of the coordinator's."""
    size = max_workers or (workers.processes if workers is not None else 0) or os.cpu_count()
    return ProcessPoolExecutor(
        max_workers=size,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=initializer,
        initargs=initargs,
    )


@hookimpl
def register_executors(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register ``inline``, ``thread`` and ``local``."""
    register("inline", InlineExecutor)
    register("thread", thread_pool)
    register("local", local_pool)
