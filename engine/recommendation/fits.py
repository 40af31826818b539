"""Stored recipe fits: a run fits its recipe once, when the data changed, and shares the fit.

A fit is pickled into ``recipe_fits`` under the recipe's name, a digest of its parameters
and a fingerprint of the data it saw (interactions, catalogue, recipients when the recipe
uses them). A run first looks for the fit it already chose (``run_recipe_fits``), so every
worker of one run recommends from the same fit even if data arrives meanwhile; otherwise
it reuses a fit with the same fingerprint, or fits and stores one. Two workers fitting at
once both insert; the unique key keeps the first and both then load that one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import pickle
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func
from sqlmodel import col, select

from engine.audience.importer import load_interactions, load_items
from engine.db import insert_ignore, session_scope
from engine.models import InteractionRow, RecipeFitRow, RecipientRow, RunRecipeFitRow, RunRow
from engine.types import Interaction, Item, Recipe, Recipient

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine as SAEngine

    from engine.app import Engine

log = logging.getLogger(__name__)

KEEP_FITS = 2
"""Older fits of the same recipe and parameters are deleted, unless a running run uses one."""


def uses_recipients(recipe: Recipe) -> bool:
    """True when the recipe's ``fit`` takes a ``users`` keyword (recipients for segments)."""
    try:
        return "users" in inspect.signature(recipe.fit).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def fit_recipe(
    recipe: Recipe,
    interactions: Iterable[Interaction],
    items: Iterable[Item] = (),
    users: Iterable[Recipient] = (),
) -> None:
    """Fit ``recipe``, passing the recipients only to recipes that take them."""
    if uses_recipients(recipe):
        recipe.fit(interactions, items, users=users)  # type: ignore[call-arg]
    else:
        recipe.fit(interactions, items)


def params_digest(params: Mapping[str, Any]) -> str:
    """A stable digest of a recipe's parameters (key order does not matter)."""
    text = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def load_recipients(db: SAEngine) -> list[Recipient]:
    """Every recipient with attributes, by id (what segment-aware recipes fit on)."""
    with session_scope(db) as session:
        rows = session.scalars(select(RecipientRow).order_by(col(RecipientRow.id))).all()
    return [Recipient(r.id, r.email, dict(r.attributes or {})) for r in rows]


def data_fingerprint(db: SAEngine, items: Sequence[Item], users: Sequence[Recipient] | None) -> str:
    """Changes whenever an interaction is added or removed, or the catalogue or recipients do."""
    with session_scope(db) as session:
        stats = session.execute(
            select(
                func.count(),
                func.max(InteractionRow.id),
                func.sum(InteractionRow.value),
                func.max(InteractionRow.timestamp),
            )
        ).one()
    digest = hashlib.sha256(repr(tuple(stats)).encode())
    for item in items:
        digest.update(
            json.dumps([item.item_id, item.attributes], sort_keys=True, default=str).encode()
        )
    if users is not None:
        digest.update(b"\x00users")
        for person in users:
            entry = [person.recipient_id, person.attributes]
            digest.update(json.dumps(entry, sort_keys=True, default=str).encode())
    return digest.hexdigest()


@dataclass
class StoredFit:
    """A fitted recipe and where it came from."""

    recipe: Recipe
    fit_id: int | None  # None when the recipe could not be pickled (fitted in memory only)
    reused: bool
    fit_seconds: float


def _load(row: RecipeFitRow) -> Recipe:
    recipe: Recipe = pickle.loads(row.blob)  # our own database: trusted like policy models
    return recipe


def weighted(
    interactions: Iterable[Interaction], kind_weights: Mapping[str, float] | None
) -> list[Interaction]:
    """``interactions`` with each listed kind's value multiplied (a weight of 0 drops it)."""
    if not kind_weights:
        return list(interactions)
    kept = []
    for event in interactions:
        weight = kind_weights.get(event.kind, 1.0)
        if weight == 1.0:
            kept.append(event)
        elif weight:
            kept.append(dataclasses.replace(event, value=event.value * weight))
    return kept


def fit_or_reuse(
    engine: Engine,
    name: str,
    params: Mapping[str, Any],
    run_id: str | None = None,
    *,
    kind_weights: Mapping[str, float] | None = None,
) -> StoredFit:
    """The fitted recipe ``name(**params)``: the run's own, a matching stored one, or a new one.

    ``kind_weights`` scale the interactions of those kinds before the fit (the campaign's
    ``email_click_weight``); they are part of the stored fit's key.
    """
    db = engine.db
    if run_id is not None:
        mapped = _run_fit(db, run_id)
        if mapped is not None:
            return mapped
    recipe = engine.recipes.get(name)(**params)
    items = load_items(db)
    users = load_recipients(db) if uses_recipients(recipe) else None
    weights = {kind: w for kind, w in (kind_weights or {}).items() if w != 1.0}
    keyed = {**params, "\x00kind_weights": weights} if weights else params
    digest, fingerprint = params_digest(keyed), data_fingerprint(db, items, users)
    key = (
        col(RecipeFitRow.recipe) == name,
        col(RecipeFitRow.params_digest) == digest,
        col(RecipeFitRow.fingerprint) == fingerprint,
    )
    with session_scope(db) as session:
        found = session.scalars(select(RecipeFitRow).where(*key)).first()
    reused = found is not None
    if found is not None:
        recipe = _load(found)
    else:
        started = time.perf_counter()
        fit_recipe(recipe, weighted(load_interactions(db), weights), items, users or ())
        seconds = time.perf_counter() - started
        try:
            blob = pickle.dumps(recipe, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            log.warning("recipe %r cannot be pickled (%s): each worker fits its own", name, exc)
            return StoredFit(recipe, None, False, seconds)
        values = {
            "recipe": name,
            "params_digest": digest,
            "fingerprint": fingerprint,
            "blob": blob,
            "fit_seconds": seconds,
        }
        with session_scope(db) as session:
            landed = insert_ignore(session, RecipeFitRow, [values])
            found = session.scalars(select(RecipeFitRow).where(*key)).one()
        if not landed:  # another worker stored the same fit first: use that one
            recipe = _load(found)
        _prune(db, name, digest)
    assert found.id is not None
    if run_id is not None:
        with session_scope(db) as session:
            insert_ignore(session, RunRecipeFitRow, [{"run_id": run_id, "fit_id": found.id}])
        mapped = _run_fit(db, run_id)
        if mapped is not None and mapped.fit_id != found.id:  # the run had chosen another
            return mapped
    return StoredFit(recipe, found.id, reused, found.fit_seconds)


def _run_fit(db: SAEngine, run_id: str) -> StoredFit | None:
    """The fit the run already chose; a choice whose fit was deleted is forgotten."""
    with session_scope(db) as session:
        mapped = session.get(RunRecipeFitRow, run_id)
        if mapped is None:
            return None
        row = session.get(RecipeFitRow, mapped.fit_id)
        if row is None:
            session.delete(mapped)
            return None
    return StoredFit(_load(row), row.id, True, row.fit_seconds)


def _prune(db: SAEngine, name: str, digest: str) -> None:
    """Delete all but the newest fits of one recipe and parameters, sparing running runs'."""
    with session_scope(db) as session:
        ids = session.scalars(
            select(RecipeFitRow.id)
            .where(col(RecipeFitRow.recipe) == name)
            .where(col(RecipeFitRow.params_digest) == digest)
            .order_by(col(RecipeFitRow.id).desc())
        ).all()
        old = list(ids[KEEP_FITS:])
        if not old:
            return
        in_use = session.scalars(
            select(RunRecipeFitRow.fit_id)
            .join(RunRow, col(RunRow.id) == col(RunRecipeFitRow.run_id))
            .where(col(RunRow.status) == "running")
            .where(col(RunRecipeFitRow.fit_id).in_(old))
        ).all()
        doomed = sorted(set(old) - set(in_use))
        if doomed:
            session.execute(delete(RecipeFitRow).where(col(RecipeFitRow.id).in_(doomed)))
