"""Built-in executors: ``inline`` (the calling thread) and ``thread`` (a thread pool)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
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


def thread_pool(max_workers: int = 4) -> ThreadPoolExecutor:
    """A thread pool; rendering releases the GIL rarely, delivery often (network I/O)."""
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="tailormail")


@hookimpl
def register_executors(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register ``inline`` and ``thread``."""
    register("inline", InlineExecutor)
    register("thread", thread_pool)
