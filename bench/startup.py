"""How soon the ``tailormail`` command answers: whole processes against an import floor.

Each command runs as a user runs it (a fresh process, wall clock from start to exit) in
a sample project made by ``tailormail init``, its data imported. The floor is a process
that only imports what any command needs anyway:
``python -c "import sqlalchemy, typer, rich, jinja2, pydantic"``. The runs are
interleaved (floor, each command, floor, ...) so a busy machine slows all alike; each
figure is the median of ``--runs`` runs, and its ratio is to the floor's median.

    python bench/startup.py                  # 10 runs each
    python bench/startup.py --runs 3 --json startup.json

Prints a table, then one ``startup.<command>.ratio VALUE`` line per command.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
FLOOR = [sys.executable, "-c", "import sqlalchemy, typer, rich, jinja2, pydantic"]
SCRIPT = Path(sys.executable).with_name("tailormail")  # the console script, as installed
TAILORMAIL = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "engine"]
COMMANDS: dict[str, list[str]] = {
    "version": ["--version"],
    "help": ["--help"],
    "runs": ["runs"],
    "check": ["check"],
    "plugins": ["plugins"],
}
"""The commands timed, by key: ``startup.<key>.ratio``."""


def timed(argv: list[str], cwd: Path) -> float:
    """Seconds from starting ``argv`` to its exit (it must succeed)."""
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False, env=_env())
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    return seconds


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TAILORMAIL_PROJECT"}
    return env | {"COLUMNS": "120", "PYTHONPATH": str(ROOT)}


def make_project(root: Path) -> None:
    """The sample project with its sample data imported (what ``init`` suggests next)."""
    subprocess.run([*TAILORMAIL, "init", str(root)], check=True, capture_output=True, env=_env())
    for kind, file in (("recipients", "people.csv"), ("items", "items.csv")):
        subprocess.run(
            [*TAILORMAIL, "import", kind, file],
            cwd=root,
            check=True,
            capture_output=True,
            env=_env(),
        )


def measure(root: Path, runs: int, commands: dict[str, list[str]]) -> dict[str, list[float]]:
    """Seconds per run of the floor and each command, interleaved, after one warm-up each
    (the first run of a process writes bytecode caches)."""
    plan = {"floor": FLOOR} | {key: [*TAILORMAIL, *args] for key, args in commands.items()}
    for argv in plan.values():
        timed(argv, root)
    seconds: dict[str, list[float]] = {key: [] for key in plan}
    for _ in range(runs):
        for key, argv in plan.items():
            seconds[key].append(timed(argv, root))
    return seconds


def figures_of(seconds: dict[str, list[float]]) -> dict[str, Any]:
    """Median seconds per command and its ratio to the floor's median."""
    floor = statistics.median(seconds["floor"])
    return {
        key: {"median_s": statistics.median(runs), "ratio": statistics.median(runs) / floor}
        for key, runs in seconds.items()
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and keys, write ``--json``; returns the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of each command (10)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tailormail-startup-") as scratch:
        root = Path(scratch) / "shop"
        make_project(root)
        figures = {"startup": figures_of(measure(root, args.runs, COMMANDS))}
    table = Table(title=f"tailormail start-up, median of {args.runs} interleaved runs")
    for column in ("command", "median s", "ratio to floor"):
        table.add_column(column, justify="left" if column == "command" else "right")
    for key, figure in figures["startup"].items():
        shown = "python -c 'import sqlalchemy, typer, rich, jinja2, pydantic'"
        label = shown if key == "floor" else "tailormail " + " ".join(COMMANDS[key])
        table.add_row(label, f"{figure['median_s']:.3f}", f"{figure['ratio']:.2f}x")
    console = Console()
    console.print(table)
    for key, figure in figures["startup"].items():
        if key != "floor":
            console.print(f"startup.{key}.ratio {figure['ratio']:.2f}", highlight=False)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
