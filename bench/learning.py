"""How close each policy gets to the oracle, through the real decision, ledger and reward code.

The population (seeded; one recipient per row of a CSV imported like any audience):

- ``age_band`` young 35%, middle 40%, senior 25%; ``device`` mobile 60%, desktop 40%;
  ``interest`` news, style, deals, books (25% each); plus ``first_name``, an email at one
  of a few mailbox providers and a ``timezone`` (which change nothing: noise features).
- Four variants (minimal, visual, urgent, digest). The chance of a click is 2% plus the
  lifts of the recipient's attributes for the variant (``LIFTS``): from 2% to 10%, the low
  rates of real email. Segments have different best variants, so a policy that ignores
  the context cannot reach the oracle (everyone gets their own best variant).

Every simulated day the campaign runs for everyone at 09:00 (``engine.clock`` is a
``SimulatedClock``), each recipient clicks with their probability within six hours, and
the reward job runs the next morning: the attribution window (20 h) has closed, rewards
are joined and the policy learns from that day, as in production. Per policy: the mean
click probability of the variants chosen over the last 20% of sends as a fraction of the
oracle's (``oracle_fraction_last``), and the cumulative regret (expected clicks lost
against the oracle, ``regret``). A supervised-to-bandit check on scikit-learn's digits
compares one pass of ``vw`` through the Policy API with a plain VW loop.

    python bench/learning.py [--recipients 5000 --days 20] [--json FILE] [--png FILE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from learning_sim import POLICIES, oracle_summary, run_policy  # noqa: E402
from learning_supervised import supervised_check  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=5000)
    parser.add_argument("--days", type=int, default=20, help="one send to everyone per day")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="policies simulated in parallel")
    parser.add_argument("--policies", help="comma-separated subset of: " + ", ".join(POLICIES))
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--png", type=Path, help="draw the learning curves to this PNG")
    args = parser.parse_args(argv)
    if args.recipients < 10 or args.days < 2 or args.jobs < 1:
        parser.error("need --recipients >= 10, --days >= 2 and --jobs >= 1")
    names = args.policies.split(",") if args.policies else list(POLICIES)
    unknown = sorted(set(names) - set(POLICIES))
    if unknown:
        parser.error(f"unknown policies {unknown}; choose from {', '.join(POLICIES)}")
    args.names = names
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    console = Console()
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    # First, alone on the machine: its speed ratio compares two loops timed in this process.
    with console.status("supervised-to-bandit check on scikit-learn's digits"):
        supervised = supervised_check(seed=args.seed)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    spawn = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory() as tmp,
        spawn.Manager() as manager,
        ProcessPoolExecutor(args.jobs, spawn) as pool,
        Progress(*columns, TimeElapsedColumn(), console=console) as progress,
    ):
        days_done = manager.dict()  # policy -> simulated days finished, for the bars
        bars = {name: progress.add_task(f"{name} (days)", total=args.days) for name in args.names}
        futures = {
            name: pool.submit(
                run_policy, name, Path(tmp) / name, args.recipients, args.days, args.seed, days_done
            )
            for name in args.names
        }
        while len(results) < len(futures):
            # Only the running ones: a finished future would make this wait a busy loop.
            pending = [f for f in futures.values() if not f.done()]
            wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for name, bar in bars.items():
                progress.update(bar, completed=days_done.get(name, 0))
            for name, future in futures.items():
                if future.done() and name not in results:
                    results[name] = future.result()
                    note = results[name].get("note")
                    message = f"{name}: {results[name]['seconds']:.0f}s"
                    progress.console.print(message + (f"; {note}" if note else ""))
        results = {name: futures[name].result() for name in args.names}
    oracle = oracle_summary(next(iter(results.values())))
    figures = report(console, results, oracle, supervised, args)
    figures["seconds"] = time.perf_counter() - started
    console.print(f"whole benchmark: {figures['seconds']:.0f}s")
    if args.png:
        draw(args.png, results, oracle)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


def report(
    console: Console,
    results: dict[str, dict[str, Any]],
    oracle: dict[str, Any],
    supervised: dict[str, float],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Print the tables; return the figures as the JSON object ``--json`` writes."""
    table = Table(
        title=f"{args.recipients} recipients x {args.days} days; last 20% of sends vs oracle"
    )
    for column in ("policy", "sends", "CTR (last 20%)", "oracle fraction", "regret", "notes"):
        table.add_column(column, justify="left" if column in ("policy", "notes") else "right")
    policies: dict[str, Any] = {}
    for name, result in [*results.items(), ("oracle", oracle)]:
        fraction = result["ctr_last"] / oracle["ctr_last"]
        policies[name] = {
            "sends": result["sends"],
            "ctr_last": result["ctr_last"],
            "oracle_fraction_last": fraction,
            "regret": result["regret"],
            "params": result.get("params", {}),
            "seconds": result.get("seconds", 0.0),
        } | ({"test": result["test"]} if "test" in result else {})
        notes = result.get("note", "")
        table.add_row(
            name,
            f"{result['sends']:,}",
            f"{result['ctr_last']:.2%}",
            f"{fraction:.3f}",
            f"{result['regret']:,.0f}",
            notes,
        )
    console.print(table)
    for name, result in results.items():
        if "test" in result:  # when the A/B test dropped variants and named its winner
            console.print(f"{name}: {result['note']}")
    vw_regrets = [v["regret"] for k, v in policies.items() if k == "vw" or k.startswith("vw_")]
    figures: dict[str, Any] = {
        "recipients": args.recipients,
        "days": args.days,
        "policies": policies,
        "supervised": supervised,
    }
    if vw_regrets and "abtest" in policies:
        figures["best_vw_regret_over_abtest"] = min(vw_regrets) / policies["abtest"]["regret"]
        ratio = figures["best_vw_regret_over_abtest"]
        console.print(f"best vw regret / abtest regret: {ratio:.2f}")
    check = Table(title="supervised to bandit: scikit-learn digits, one pass")
    for column in ("policy API accuracy", "plain VW accuracy", "ratio", "speed ratio"):
        check.add_column(column, justify="right")
    check.add_row(
        f"{supervised['policy_accuracy']:.3f}",
        f"{supervised['reference_accuracy']:.3f}",
        f"{supervised['policy_accuracy'] / supervised['reference_accuracy']:.3f}",
        f"{supervised['speed_ratio']:.2f}",
    )
    console.print(check)
    return figures


def draw(path: Path, results: dict[str, dict[str, Any]], oracle: dict[str, Any]) -> None:
    """Expected CTR per simulated day, one line per policy and the oracle dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.8), dpi=110, layout="tight")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, result in results.items():
        axes.plot(range(1, len(result["daily_ctr"]) + 1), result["daily_ctr"], label=name)
    days = range(1, len(oracle["daily_ctr"]) + 1)
    axes.plot(days, oracle["daily_ctr"], "k--", label="oracle")
    axes.set(title="tailormail learning benchmark", xlabel="day", ylabel="expected CTR")
    axes.yaxis.set_major_formatter(lambda value, _pos: f"{value:.1%}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", ncols=2)
    figure.savefig(path)


if __name__ == "__main__":
    main()
