"""The ``outbox`` backend: one ``.eml`` file per message in a folder, for development."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import hookimpl
from engine.audience.personal_files import OUTBOX, note
from engine.errors import ConfigError
from engine.mime import message_bytes
from engine.tokens import TEST_SEND_ID
from engine.types import DeliveryBackend, Message, SendResult, SendStatus

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)

if TYPE_CHECKING:
    from engine.app import Engine


def eml_name(send_id: int) -> str:
    """The file name of a send's message: one name per send id, so a resend overwrites."""
    return f"{send_id:08d}.eml"


class OutboxBackend(DeliveryBackend):
    """Writes each message to ``<path>/<send id>.eml`` instead of sending it.

    ``path`` is relative to the project directory (to the working directory without an
    engine). Writing is atomic, so a reader never sees half a message, and idempotent per
    send id, so a resumed run never leaves two files for one send. A send whose outcome
    is unknown (the worker died while writing) is reconciled from the folder: its file is
    there (sent) or it is not (never written: sent again), so delivery is exactly-once.
    """

    name = "outbox"
    reports_handover = True

    def __init__(self, engine: Engine | None = None, path: str = "outbox", **unknown: Any):
        if unknown:
            names = ", ".join(repr(key) for key in sorted(unknown))
            raise ConfigError(f"delivery.outbox: unknown option {names}")
        self.engine = engine
        self.folder = engine.settings.path(path) if engine is not None else Path(path)

    def open(self) -> None:
        """Create the folder, so a missing one fails here rather than per message, and
        register it: ``forget`` cleans it even after a switch to another backend."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.engine is not None:
            note(self.engine.db, OUTBOX, [self.folder])

    def copy_path(self, result: SendResult) -> Path | None:
        """The file this backend wrote for ``result``
        (``engine.audience.personal_files.KeepsCopies``: a test copy is registered under the
        person it was rendered for)."""
        if result.status is not SendStatus.SENT or not result.provider_id:
            return None
        return self.folder / result.provider_id

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        """Write every message; a file-system error is a temporary failure for that message,
        except a full disk, which raises (the run stops, resumable, instead of deferring
        every message that follows)."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self.send_each(messages, self._write)

    def reconcile(self, send_ids: Sequence[int]) -> dict[int, SendResult]:
        """Sent if the send's file is in the folder, else never written (sent again)."""
        answers = {}
        for send_id in send_ids:
            name = eml_name(send_id)
            if (self.folder / name).is_file():
                answers[send_id] = SendResult(send_id, SendStatus.SENT, provider_id=name)
            else:
                error = f"{name} is not in {self.folder}: never written"
                answers[send_id] = SendResult(send_id, SendStatus.TEMPORARY_FAILURE, error=error)
        return answers

    def forget(self, send_ids: Sequence[int]) -> int:
        """Delete the files of these sends: a stored message holds the address and content."""
        erased = 0
        for send_id in send_ids:
            with contextlib.suppress(FileNotFoundError):
                (self.folder / eml_name(send_id)).unlink()
                erased += 1
        return erased

    def _write(self, message: Message) -> SendResult:
        try:
            data = message_bytes(message)
        except ValueError as exc:
            return SendResult(message.send_id, SendStatus.PERMANENT_FAILURE, error=str(exc))
        name = eml_name(message.send_id)
        if message.send_id == TEST_SEND_ID:  # test sends share send id 0: one file per variant
            name = f"test-{_SAFE.sub('_', str(message.metadata.get('variant', 'message')))}.eml"
        try:
            _write_atomically(self.folder / name, data)
        except OSError as exc:
            if exc.errno in _NO_SPACE:  # every later message would fail too: stop the run
                raise OSError(exc.errno, exc.strerror, str(self.folder)) from exc
            return SendResult(message.send_id, SendStatus.TEMPORARY_FAILURE, error=str(exc))
        return SendResult(message.send_id, SendStatus.SENT, provider_id=name)


def _write_atomically(target: Path, data: bytes) -> None:
    # A dot-prefixed temp file in the same folder: os.replace is atomic on one file system,
    # and readers globbing *.eml never pick up the partial file. No fsync: this is a
    # development backend, and an fsync per message would dominate a large run.
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@hookimpl
def register_backends(register: Callable[[str, Any], None]) -> None:
    """Register the ``outbox`` backend."""
    register("outbox", OutboxBackend)
