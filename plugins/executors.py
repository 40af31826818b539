"""Built-in executors: ``inline`` (the calling thread), ``thread`` (a thread pool) and
``local`` (a process pool sized to the cores, for the shards of large runs).

Executors are ``concurrent.futures`` executors. The engine uses one to render and send a
batch (``executor`` in the settings) and, for runs larger than ``workers.shard_size``,
one to run shards (``workers.executor``: called with ``workers=`` the workers settings).
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


def thread_pool(max_workers: int = 4, workers: Any = None) -> ThreadPoolExecutor:
    """A thread pool; rendering releases the GIL rarely, delivery often (network I/O)."""
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="tailormail")


def local_pool(max_workers: int = 0, workers: Any = None) -> ProcessPoolExecutor:
    """A process pool of ``workers.processes`` (or ``max_workers``) processes, one per core
    when 0. Processes are spawned, not forked: each builds its own engine and database
    connections, and inherits no lock or connection of the coordinator's."""
    size = max_workers or (workers.processes if workers is not None else 0) or os.cpu_count()
    return ProcessPoolExecutor(max_workers=size, mp_context=multiprocessing.get_context("spawn"))


@hookimpl
def register_executors(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register ``inline``, ``thread`` and ``local``."""
    register("inline", InlineExecutor)
    register("thread", thread_pool)
    register("local", local_pool)
