"""Concurrent trigger requests accepted together: one round of queries and one commit for
all the requests that arrived while the previous round ran (``TriggerDesk.accept_many``).

Under load each request would otherwise pay its own dozen database round trips and its
own transaction; a round takes whatever has queued (up to ``MAX_BATCH`` triggers), so the
cost per trigger falls as the load rises, and an idle API answers one request at once.
Each request still gets exactly the answer (or refusal) it would alone.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from typing import Any

from engine.sending.triggers import MAX_BATCH, Group, TriggerDesk


class TriggerBatcher:
    """``submit(group)`` gives a future of the group's answers (or its refusal)."""

    def __init__(self, desk: TriggerDesk, *, threads: int = 2) -> None:
        """``threads`` rounds may run at once (one decides while another commits)."""
        self.desk = desk
        self._queue: deque[tuple[Group, Future[list[dict[str, Any]]]]] = deque()
        self._ready = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._run, name=f"tm-triggers-{n}", daemon=True)
            for n in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, group: Group) -> Future[list[dict[str, Any]]]:
        """Queue ``group``; its future holds its answers, or raises its refusal."""
        future: Future[list[dict[str, Any]]] = Future()
        with self._ready:
            if self._stopping:
                raise RuntimeError("the API is stopping")
            self._queue.append((group, future))
            self._ready.notify()
        return future

    def _take(self) -> list[tuple[Group, Future[list[dict[str, Any]]]]]:
        with self._ready:
            while not self._queue and not self._stopping:
                self._ready.wait()
            taken: list[tuple[Group, Future[list[dict[str, Any]]]]] = []
            size = 0
            while self._queue and (
                not taken or size + len(self._queue[0][0].requests) <= MAX_BATCH
            ):
                group, future = self._queue.popleft()
                taken.append((group, future))
                size += len(group.requests)
            return taken

    def _run(self) -> None:
        while True:
            taken = self._take()
            if not taken:
                return  # stopping, and nothing left
            try:
                results = self.desk.accept_many([group for group, _ in taken])
            except BaseException as exc:  # a database outage: every request hears it
                for _, future in taken:
                    future.set_exception(exc)
                continue
            for (_, future), result in zip(taken, results, strict=True):
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def close(self) -> None:
        """Answer what is queued, then stop the threads."""
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)
