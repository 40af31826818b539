"""The intake writer as a process of its own: ``python -m engine.web.writer``.

``engine.feedback.writer.WriterProcess`` starts it for each serving process's log: it
builds its own engine from the project, stores the log ``--tag`` in batches
(``engine.feedback.writer.Writer``), reports each stored sequence number on its standard
output, and exits when its standard input closes. It lives here, above the Engine, because
it builds one; the loop it runs lives with the intake in ``engine.feedback``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path

from engine.app import Engine
from engine.feedback.eventlog import Tail
from engine.feedback.intake import _Store, store_orphans
from engine.feedback.writer import LogFiles, Writer
from engine.settings import load_settings

WRITER_NICE = 10  # the child yields the CPU to the process answering clicks


def main(argv: list[str] | None = None) -> None:
    """The child: store the log ``--tag`` until standard input closes."""
    parser = argparse.ArgumentParser(prog="python -m engine.web.writer")
    parser.add_argument("-p", "--project", type=Path, required=True)
    parser.add_argument("--spool", type=Path, required=True)
    parser.add_argument("--tag", required=True)
    args = parser.parse_args(argv)
    os.nice(WRITER_NICE)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    stopping, wake = threading.Event(), threading.Event()

    def wait_for_parent() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the parent closed it, or died
        stopping.set()
        wake.set()

    threading.Thread(target=wait_for_parent, daemon=True).start()

    def report(seq: int) -> None:
        sys.stdout.write(f"{seq}\n")
        sys.stdout.flush()

    files = LogFiles(args.spool, args.tag)
    with Engine(load_settings(args.project)) as engine:
        store = _Store(engine)
        writer = Writer(
            Tail(files, start=files.first_segment()),  # type: ignore[arg-type]
            store.lines,
            report,
            lambda: store_orphans(engine, args.tag),
            stopping=stopping,
            wake=wake,
        )
        writer.run()


if __name__ == "__main__":
    main()
