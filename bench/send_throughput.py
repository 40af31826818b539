"""How fast a campaign run decides, renders, logs and delivers.

Prints messages per second for several set-ups and each one's ratio against the baseline
(the memory backend, inline executor, uniform policy) measured in the same run, because
these machines are noisy. ``--json FILE`` writes the figures as one JSON object.

    python bench/send_throughput.py --recipients 2000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from kit.project import Project  # noqa: E402

from engine.sending.real_run import run_campaign  # noqa: E402

SETUPS = [  # (name, backend, executor, policy)
    ("baseline: memory, inline, uniform", "memory", "inline", "uniform"),
    ("memory, inline, vw", "memory", "inline", "vw"),
    ("outbox, inline, vw", "outbox", "inline", "vw"),
    ("outbox, thread x4, vw", "outbox", "thread", "vw"),
]


def measure(root: Path, recipients: int, backend: str, executor: str, policy: str) -> float:
    """Messages per second for one full run on a fresh SQLite project."""
    project = Project(root, f"sqlite:///{root}/bench.db")
    project.add_campaign("bench", policy=policy)
    engine = project.engine(backend=backend, executor=executor)
    project.seed(engine, people=recipients, items=30)
    start = time.perf_counter()
    summary = run_campaign(engine, "bench", run_id="bench")
    elapsed = time.perf_counter() - start
    engine.close()
    assert summary.sent == recipients, summary
    return recipients / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=2000)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, backend, executor, policy) in enumerate(SETUPS):
            figures[name] = measure(Path(tmp) / str(i), args.recipients, backend, executor, policy)
    baseline = figures[SETUPS[0][0]]
    table = Table(title=f"campaign run throughput, {args.recipients} recipients")
    table.add_column("set-up")
    table.add_column("messages/s", justify="right")
    table.add_column("ratio to baseline", justify="right")
    for name, rate in figures.items():
        table.add_row(name, f"{rate:,.0f}", f"{rate / baseline:.2f}")
    Console().print(table)
    if args.json:
        result = {
            "recipients": args.recipients,
            "messages_per_second": figures,
            "ratio_to_baseline": {k: v / baseline for k, v in figures.items()},
        }
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
