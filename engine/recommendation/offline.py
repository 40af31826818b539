"""Offline evaluation of a recipe: a temporal leave-last-out split, full-catalogue ranking.

Each user's newest interaction is held out (ties in time keep the order they arrived in);
the recipe is fitted on everything else and asked for ``k`` items from the whole catalogue
minus the user's earlier items. HR@k, NDCG@k and MRR@k say how often and how high the held
out item comes back; coverage is the share of the catalogue that appears in any list.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from engine.models import as_utc
from engine.recommendation.fits import fit_recipe
from engine.types import Interaction, Item, Recipe, Recipient

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Split:
    """Training interactions, the held-out item per user, and each user's earlier items."""

    train: list[Interaction]
    held_out: dict[str, str]
    earlier: dict[str, set[str]]


@dataclass(frozen=True)
class RecipeScore:
    """One recipe's figures on one split."""

    recipe: str
    users: int
    hr: float
    ndcg: float
    mrr: float
    coverage: float
    fit_seconds: float
    p50_ms: float
    p99_ms: float
    p99_cpu_ms: float  # the same calls in CPU time: what a busy shared machine cannot inflate


def leave_last_out(interactions: Iterable[Interaction]) -> Split:
    """Hold out every user's newest interaction (users with a single one only train)."""
    events = list(interactions)
    order = sorted(range(len(events)), key=lambda n: (as_utc(events[n].timestamp), n))
    last: dict[str, int] = {}
    count: dict[str, int] = {}
    for n in order:
        user = events[n].user_id
        last[user] = n
        count[user] = count.get(user, 0) + 1
    held = {n for user, n in last.items() if count[user] > 1}
    train = [events[n] for n in order if n not in held]
    earlier: dict[str, set[str]] = {}
    for event in train:
        earlier.setdefault(event.user_id, set()).add(event.item_id)
    held_out = {events[n].user_id: events[n].item_id for n in sorted(held)}
    return Split(train, held_out, earlier)


def evaluate(
    name: str,
    recipe: Recipe,
    split: Split,
    items: Sequence[Item] = (),
    users: Sequence[Recipient] = (),
    *,
    k: int = 10,
    progress: Progress | None = None,
) -> RecipeScore:
    """Fit ``recipe`` on ``split.train`` and score its top-``k`` for every held-out user."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    started = time.perf_counter()
    fit_recipe(recipe, split.train, items, users)
    fit_seconds = time.perf_counter() - started
    hits = ndcg = mrr = 0.0
    shown: set[str] = set()
    latencies: list[float] = []
    cpu: list[float] = []
    total = len(split.held_out)
    for done, (user, target) in enumerate(split.held_out.items(), start=1):
        began, began_cpu = time.perf_counter(), time.thread_time()
        answer = recipe.recommend(user, k, exclude=split.earlier.get(user, ()))
        latencies.append(time.perf_counter() - began)
        cpu.append(time.thread_time() - began_cpu)
        shown.update(answer)
        if target in answer[:k]:
            place = answer.index(target)
            hits += 1
            ndcg += 1.0 / math.log2(place + 2)
            mrr += 1.0 / (place + 1)
        if progress is not None and (done % 200 == 0 or done == total):
            progress(done, total)
    catalogue = {item.item_id for item in items} or {e.item_id for e in split.train}
    users_n = max(total, 1)
    millis = np.asarray(latencies or [0.0]) * 1000.0
    return RecipeScore(
        recipe=name,
        users=total,
        hr=hits / users_n,
        ndcg=ndcg / users_n,
        mrr=mrr / users_n,
        coverage=len(shown & catalogue) / max(len(catalogue), 1),
        fit_seconds=fit_seconds,
        p50_ms=float(np.percentile(millis, 50)),
        p99_ms=float(np.percentile(millis, 99)),
        p99_cpu_ms=float(np.percentile(np.asarray(cpu or [0.0]) * 1000.0, 99)),
    )
