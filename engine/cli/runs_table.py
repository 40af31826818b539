"""What ``tailormail runs`` prints: every run id whole, whatever the terminal's width.

A run id is what ``send --run ID`` takes, so it is never shortened: the table is printed
when it fits the terminal, one block per run when it does not, and ``--ids`` prints the
ids alone, one per line, for scripts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from engine.sending.run_history import RunInfo

STATUSES = ("sent", "skipped", "deferred", "failed", "unknown", "pending")


def _workers(info: RunInfo) -> str:
    return f"{info.workers}" + (f" / {info.shards} shards" if info.shards else "")


def _when(info: RunInfo) -> tuple[str, str]:
    finished = f"{info.finished_at:%Y-%m-%d %H:%M:%S}" if info.finished_at else ""
    return f"{info.started_at:%Y-%m-%d %H:%M:%S}", finished


def runs_table(found: Sequence[RunInfo], title: str) -> Table:
    """The runs as one table, the run column never wrapped nor shortened."""
    table = Table(title=title)
    table.add_column("run", no_wrap=True, overflow="ignore")
    for column in ("status", *STATUSES, "workers", "model", "started", "finished"):
        table.add_column(column, justify="right" if column in STATUSES else "left")
    for info in found:
        table.add_row(
            Text(info.run_id),
            info.status,
            *(str(info.counts.get(status, 0)) for status in STATUSES),
            _workers(info),
            Text(info.model_version or "-"),
            *_when(info),
        )
    return table


def run_block(info: RunInfo) -> Text:
    """One run as three short lines, its id first and whole (for narrow terminals)."""
    counts = ", ".join(f"{status} {info.counts.get(status, 0)}" for status in STATUSES)
    started, finished = _when(info)
    span = f"started {started}" + (f", finished {finished}" if finished else "")
    return Text(
        f"{info.run_id}\n  {info.status}: {counts}\n"
        f"  workers {_workers(info)}, model {info.model_version or '-'}, {span}"
    )


def print_runs(console: Console, found: Sequence[RunInfo], title: str, ids: bool) -> None:
    """Print ``found``: the ids alone (``ids``), the table, or blocks when it is too wide."""
    if ids:
        for info in found:
            console.print(Text(info.run_id), soft_wrap=True)
        return
    table = runs_table(found, title)
    # Measured as if the terminal were unlimited: a measurement clamps to its width.
    unlimited = console.options.update_width(100_000)
    if console.measure(table, options=unlimited).maximum <= console.width:
        console.print(table)
    else:
        console.print(Text(title, style="bold"))
        for info in found:
            console.print(run_block(info))  # wrapped between words, never inside an id
    for info in found:
        if info.error:
            console.print(Text(f"{info.run_id} {info.status}: {info.error}"), soft_wrap=True)
