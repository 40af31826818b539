"""The ledger's own rate on PostgreSQL: rows per second through claim, hand-over and
record, with nothing else (no audience, no decision, no rendering, no transport).

What a run asks of the database per email, measured alone: each process opens a run of
its own campaign and moves ``--rows`` rows through the three statements per batch a real
run makes (``engine.ledger.RunLedger``: ``claim`` inserts the batch, ``hand_over``
stores each row's links and ids, ``record`` writes the outcomes), with decisions, links
and ids shaped like the sample campaign's. It prints rows per second, the client's CPU
per row (``w``) and everything else the machine was busy with per row (``p``: the
database, mostly), for one process and for ``--processes`` at once. docs/scaling.md
builds its model from these figures.

    python bench/ledger_rate.py                      # 100,000 rows; 1 and 2 processes
    python bench/ledger_rate.py --rows 20000 --processes 1,2,4 --json ledger.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from campaign import busy_seconds, cpu_seconds, postgres_database  # noqa: E402

BATCH = 500
"""Rows per batch: the bench's campaign runs (``bench/campaign.py``) send in 500s."""


def rows_of(run_id: str, campaign: str, start: int, count: int) -> list[dict[str, Any]]:
    """A batch of pending rows as the pipeline claims them (decision and context included)."""
    now = datetime.now(UTC)
    offered = [
        {"key": key, "subject": "s", "template": f"weekly/{key}.html", "features": {"k": key}}
        for key in ("plain", "visual", "digest")
    ]
    return [
        {
            "run_id": run_id,
            "campaign": campaign,
            "recipient_id": f"u{n:08d}",
            "email": f"person.{n}@example.com",
            "decision_id": uuid.uuid4().hex,
            "status": "pending",
            "skip_reason": None,
            "variant": "plain",
            "probability": 0.34,
            "pmf": {"plain": 0.34, "visual": 0.33, "digest": 0.33},
            "offered": offered,
            "context": {"country": "FR", "plan": "free", "email_domain": "example.com"},
            "policy": "vw",
            "model_version": "",
            "items": ["i001", "i002", "i003", "i004"],
            "arm": None,
            "shadow": None,
            "created_at": now,
        }
        for n in range(start, start + count)
    ]


def one_process(root: Path, rows: int, campaign: str) -> None:
    """Move ``rows`` rows through claim -> hand_over -> record once the parent says go;
    prints this process's seconds and CPU seconds as JSON."""
    from engine.app import Engine
    from engine.ledger import RunLedger
    from engine.types import Message, SendResult, SendStatus

    engine = Engine(project_dir=root, load_entry_points=False)
    ledger = RunLedger(engine, f"{campaign}@bench", campaign)
    ledger.open(None, [])
    print("ready", flush=True)  # the parent starts the clock when every process is ready
    sys.stdin.readline()
    start, cpu = time.perf_counter(), cpu_seconds()
    for first in range(0, rows, BATCH):
        owned, _ = ledger.claim(rows_of(ledger.run_id, campaign, first, min(BATCH, rows - first)))
        messages = [
            Message(
                row.id or 0,
                f"<{row.decision_id}@bench.example>",
                "alerts@example.com",
                row.email,
                "s",
                "h",
                "t",
                metadata={
                    "links": [f"https://shop.example.com/i/{n}" for n in range(5)],
                    "link_items": [[f"i00{n}", n] for n in range(4)] + [None],
                },
                send_ref=row.decision_id[:24],
            )
            for row in owned
        ]
        handed = ledger.hand_over(messages)
        ledger.record([SendResult(m.send_id, SendStatus.SENT, provider_id="p") for m in handed])
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu}), flush=True)
    ledger.close("finished")
    engine.close()


def measure(root: Path, rows: int, processes: int) -> dict[str, float]:
    """``processes`` processes at once, ``rows`` rows each: rows per second (all of
    them), client CPU per row ``w`` and the rest of the machine's busy time per row ``p``."""
    campaigns = [f"c{n}-{uuid.uuid4().hex[:6]}" for n in range(processes)]
    command = [sys.executable, __file__, "--child", str(root), str(rows)]
    workers = [
        subprocess.Popen(
            [*command, campaign], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for campaign in campaigns
    ]
    for worker in workers:
        assert worker.stdout is not None and worker.stdin is not None
        if worker.stdout.readline().strip() != "ready":
            raise SystemExit("a ledger bench process failed to start")
    busy, start = busy_seconds(), time.perf_counter()
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    results = []
    for worker in workers:
        assert worker.stdout is not None
        line = worker.stdout.readline()
        if not line:
            raise SystemExit(f"a ledger bench process failed ({worker.wait()})")
        results.append(json.loads(line))
    elapsed, busy = time.perf_counter() - start, busy_seconds() - busy
    for worker in workers:
        if worker.wait() != 0:
            raise SystemExit(f"a ledger bench process failed ({worker.returncode})")
    total = rows * processes
    client = sum(r["cpu_seconds"] for r in results)
    return {
        "rows_per_s": total / max(r["seconds"] for r in results),
        "w_ms": 1000 * client / total,
        "p_ms": 1000 * max(busy - client, 0.0) / total,
        "busy_cores": busy / elapsed,
    }


def counts(text: str) -> list[int]:
    """``--processes``: positive whole numbers separated by commas."""
    try:
        found = [int(part) for part in text.split(",")]
    except ValueError:
        found = []
    if not found or min(found) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give process counts such as 1,2")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows per process")
    parser.add_argument(
        "--processes", type=counts, default="1,2", help="process counts to measure (1,2)"
    )
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        one_process(Path(args.child[0]), int(args.child[1]), args.child[2])
        return
    from rich.console import Console
    from rich.table import Table

    from engine.scaffold import scaffold_project

    figures: dict[str, Any] = {"load": os.getloadavg()[0], "rows": args.rows}
    with tempfile.TemporaryDirectory() as tmp:
        for processes in args.processes:
            url, drop = postgres_database()
            root = Path(tmp) / f"p{processes}"
            scaffold_project(root, force=True)
            os.environ["TAILORMAIL_DATABASE_URL"] = url
            try:
                figures[str(processes)] = measure(root, args.rows, processes)
            finally:
                drop()
    figures["load_after"] = os.getloadavg()[0]
    table = Table(
        title=f"the ledger alone on PostgreSQL, batches of {BATCH} (load "
        f"{figures['load']:.1f} -> {figures['load_after']:.1f})"
    )
    for column in ("processes", "rows/s", "w: client CPU ms/row", "p: rest ms/row", "busy cores"):
        table.add_column(column, justify="right")
    console = Console()
    for processes in map(str, args.processes):
        f = figures[processes]
        table.add_row(
            processes,
            f"{f['rows_per_s']:,.0f}",
            f"{f['w_ms']:.3f}",
            f"{f['p_ms']:.3f}",
            f"{f['busy_cores']:.2f}",
        )
        console.print(f"ledger.{processes}.rows_per_s {f['rows_per_s']:.0f}", highlight=False)
        console.print(f"ledger.{processes}.p_ms {f['p_ms']:.4f}", highlight=False)
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
