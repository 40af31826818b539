"""Every recipe on MovieLens 100k: HR@10, NDCG@10, fit time and latency per user.

A temporal leave-last-out split (each user's newest rating held out), ranked against the
whole catalogue minus the user's earlier items. ``--synthetic USERS`` runs on a small
generated data set instead (no download; what the test suite does). The machine may be
shared: fit times and latencies are wall-clock figures from one run.

    python bench/recipes.py --json recipes.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import movielens  # noqa: E402

import engine  # noqa: E402
from engine.recommendation.offline import RecipeScore, evaluate, leave_last_out  # noqa: E402
from engine.types import Interaction, Item, Recipient  # noqa: E402

RECIPES: dict[str, tuple[str, dict[str, Any]]] = {  # label -> (recipe, params)
    "popularity": ("popularity", {}),
    "popularity-trending": ("popularity", {"mode": "trending", "window_days": 30}),
    "sims": ("sims", {}),
    "personalize": ("personalize", {}),
    "ranking": ("ranking", {"candidates_from": "sims", "pool": 50}),
}


def synthetic(
    users: int, items: int = 60, seed: int = 7
) -> tuple[list[Interaction], list[Item], list[Recipient]]:
    """Users walking forward through a chain of items, with noise: order matters here."""
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    events: list[Interaction] = []
    for u in range(users):
        position = rng.randrange(items)
        for step in range(rng.randint(4, 12)):
            position = (position + rng.choice((1, 1, 1, 2))) % items
            item = position if rng.random() > 0.15 else rng.randrange(items)
            moment = start + timedelta(days=u % 30, hours=step)
            events.append(Interaction(f"u{u}", f"i{item}", moment, 1.0, "view"))
    catalogue = [Item(f"i{n}", {"genre": f"g{n % 5}"}) for n in range(items)]
    people = [
        Recipient(f"u{u}", f"u{u}@example.org", {"plan": "pro" if u % 3 else "free"})
        for u in range(users)
    ]
    return events, catalogue, people


def run(
    data: tuple[list[Interaction], list[Item], list[Recipient]], console: Console
) -> dict[str, RecipeScore]:
    """Evaluate every recipe on one split of ``data``."""
    interactions, items, users = data
    split = leave_last_out(interactions)
    scores: dict[str, RecipeScore] = {}
    with Progress(console=console, transient=True) as bar:
        for label, (name, params) in RECIPES.items():
            task = bar.add_task(label, total=len(split.held_out))
            recipe = engine.recipe(name, **params)
            scores[label] = evaluate(
                label,
                recipe,
                split,
                items,
                users,
                progress=lambda done, total, t=task: bar.update(t, completed=done),
            )
    return scores


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, write ``--json``; returns the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument(
        "--synthetic",
        type=int,
        metavar="USERS",
        help="a generated data set of USERS users instead of MovieLens",
    )
    args = parser.parse_args(argv)
    console = Console()
    data = synthetic(args.synthetic) if args.synthetic else movielens.load()
    source = f"synthetic, {args.synthetic} users" if args.synthetic else "MovieLens 100k"
    scores = run(data, console)
    table = Table(title=f"recipes on {source}, leave-last-out, full catalogue")
    for column in (
        "recipe",
        "HR@10",
        "NDCG@10",
        "MRR@10",
        "coverage",
        "fit s",
        "p50 ms",
        "p99 ms",
        "p99 cpu ms",
        "HR vs popularity",
    ):
        table.add_column(column, justify="left" if column == "recipe" else "right")
    base = scores["popularity"].hr or float("nan")
    for label, s in scores.items():
        table.add_row(
            label,
            f"{s.hr:.3f}",
            f"{s.ndcg:.3f}",
            f"{s.mrr:.3f}",
            f"{s.coverage:.2f}",
            f"{s.fit_seconds:.2f}",
            f"{s.p50_ms:.2f}",
            f"{s.p99_ms:.2f}",
            f"{s.p99_cpu_ms:.2f}",
            f"{s.hr / base:.2f}x",
        )
    console.print(table)
    figures = {
        "dataset": source,
        "users": next(iter(scores.values())).users,
        "recipes": {
            label: {
                "hr10": s.hr,
                "ndcg10": s.ndcg,
                "mrr10": s.mrr,
                "coverage": s.coverage,
                "fit_s": s.fit_seconds,
                "p50_ms": s.p50_ms,
                "p99_ms": s.p99_ms,
                "p99_cpu_ms": s.p99_cpu_ms,
            }
            for label, s in scores.items()
        },
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
