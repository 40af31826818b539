"""``tailormail recommend``, ``similar`` and ``evaluate-recipe``: recipes from the terminal.

Loaded by the command line only, when one of these runs (``plugins.recipes.commands``
registers them by path).

``recommend`` and ``similar`` go through the same stored fits and campaign filters as a
run, so what they print is what an email would show. ``evaluate-recipe`` scores a recipe
offline on a temporal leave-last-out split, next to ``popularity`` on the same split.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import Progress, TaskID
from rich.table import Table
from sqlalchemy.engine import Engine as SAEngine

from engine.audience.importer import import_file, load_interactions, load_items
from engine.campaigns import NamedPlugin
from engine.cli.support import ProjectOption, console, open_engine
from engine.db import make_db
from engine.errors import ConfigError, PluginError, TailormailError
from engine.recommendation.fits import load_recipients
from engine.recommendation.recommender import campaign_recommender

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.recommendation.recommender import CampaignRecommender

ParamOption = Annotated[
    list[str] | None,
    typer.Option("--param", help="A recipe parameter as key=value (repeatable; JSON values)."),
]
_SHOWN = ("title", "name", "category", "price", "url")  # attributes worth a column


def parse_params(pairs: list[str] | None) -> dict[str, Any]:
    """``["k=v", ...]`` as parameters; a value is JSON when it parses, else a string."""
    params: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise TailormailError(f"--param {pair!r}: write it as key=value, e.g. recent=5")
        try:
            params[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            params[key.strip()] = raw
    return params


def _recommender(
    engine: Engine, campaign: str | None, recipe: str | None, params: dict[str, Any]
) -> CampaignRecommender:
    if campaign and recipe:
        raise TailormailError("give --campaign or --recipe, not both")
    if campaign:
        if params:
            raise TailormailError("--param goes with --recipe; a campaign has its own [recipe]")
        return campaign_recommender(engine, engine.campaign(campaign))
    name = recipe or "personalize"
    try:
        engine.recipes.get(name)(**params)
    except PluginError as exc:
        raise TailormailError(str(exc)) from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"recipe {name!r}: {exc}") from exc
    # A campaign stand-in with default filters: the user's own items are left out.
    stand_in = next(iter(engine.campaigns.values()), None)
    if stand_in is None:
        raise TailormailError("the project has no campaign; add one to config/campaigns/")
    chosen = stand_in.model_copy(update={"recipe": NamedPlugin(name=name, **params)})
    return campaign_recommender(
        engine, chosen.model_copy(update={"filters": type(chosen.filters)()})
    )


def _print_items(title: str, item_ids: list[str], recommender: CampaignRecommender) -> None:
    table = Table(title=title)
    table.add_column("#", justify="right")
    table.add_column("item")
    present = [
        a
        for a in _SHOWN
        if any(a in recommender.catalogue.get(i, _NO).attributes for i in item_ids)
    ]
    for attribute in present:
        table.add_column(attribute)
    for place, item_id in enumerate(item_ids, start=1):
        attributes = recommender.catalogue.get(item_id, _NO).attributes
        table.add_row(str(place), item_id, *(str(attributes.get(a, "")) for a in present))
    console.print(table)


def recommend(
    user: Annotated[str, typer.Argument(help="The recipient (user) id.")],
    campaign: Annotated[
        str | None, typer.Option(help="Use this campaign's recipe and filters.")
    ] = None,
    recipe: Annotated[
        str | None, typer.Option(help="Use this recipe (default: personalize).")
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="How many items.")] = 10,
    param: ParamOption = None,
    project: ProjectOption = None,
) -> None:
    """Print the items a user would get, through the campaign's filters."""
    with open_engine(project) as engine:
        recommender = _recommender(engine, campaign, recipe, parse_params(param))
        if not recommender.catalogue:
            raise TailormailError(
                "no items to recommend: import a catalogue with 'tailormail import items FILE'"
            )
        items = recommender.recommend(user, k)
        known = user in recommender.seen or _has_history(recommender, user)
    source = f"campaign {campaign}" if campaign else f"recipe {recipe or 'personalize'}"
    note = "" if known else " (no history: popular items)"
    _print_items(f"{len(items)} items for {user} from {source}{note}", items, recommender)


def _has_history(recommender: CampaignRecommender, user: str) -> bool:
    history = getattr(recommender.recipe, "history", None)
    return bool(history is not None and user in history.user_index)


def similar(
    item: Annotated[str, typer.Argument(help="The item id.")],
    recipe: Annotated[str, typer.Option(help="A recipe that knows similarity.")] = "sims",
    k: Annotated[int, typer.Option("-k", min=1, help="How many items.")] = 10,
    param: ParamOption = None,
    project: ProjectOption = None,
) -> None:
    """Print the items most like ITEM."""
    with open_engine(project) as engine:
        recommender = _recommender(engine, None, recipe, parse_params(param))
        if item not in recommender.catalogue:
            raise TailormailError(
                f"unknown item {item!r}: import it with 'tailormail import items FILE'"
            )
        if getattr(recommender.recipe, "similar", None) is None:
            raise TailormailError(f"recipe {recipe!r} has no similar(); try --recipe sims")
        items = recommender.similar(item, k)
    _print_items(f"{k} items like {item} ({recipe})", items, recommender)


def evaluate_recipe(
    recipe: Annotated[str, typer.Option(help="The recipe to evaluate.")] = "personalize",
    param: ParamOption = None,
    data: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="An interactions CSV/JSONL file."),
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="List length.")] = 10,
    project: ProjectOption = None,
) -> None:
    """Score a recipe offline (leave-last-out, full catalogue) next to popularity."""
    # lazy: offline evaluation brings numpy, for this command only
    from engine.recommendation.offline import evaluate, leave_last_out

    params = parse_params(param)
    with open_engine(project) as engine:
        interactions, items, users = _evaluation_data(engine.db, data)
        try:
            candidates = {recipe: engine.recipes.get(recipe)(**params)}
        except PluginError as exc:
            raise TailormailError(str(exc)) from exc
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"recipe {recipe!r}: {exc}") from exc
        if recipe != "popularity" or params:
            candidates["popularity (baseline)"] = engine.recipes.get("popularity")()
    split = leave_last_out(interactions)
    if not split.held_out:
        raise TailormailError("no user has two interactions: nothing to hold out")
    scores = []
    with Progress(transient=True) as bar:
        for label, model in candidates.items():
            task = bar.add_task(label, total=len(split.held_out))

            def advance(done: int, _total: int, task: TaskID = task) -> None:
                bar.update(task, completed=done)

            scores.append(
                evaluate(
                    label,
                    model,
                    split,
                    items,
                    users,
                    k=k,
                    progress=advance,
                )
            )
    table = Table(title=f"{len(split.held_out)} users, leave-last-out, full catalogue")
    for column in ("recipe", f"HR@{k}", f"NDCG@{k}", f"MRR@{k}", "coverage", "fit s", "p99 ms"):
        table.add_column(column, justify="left" if column == "recipe" else "right")
    for s in scores:
        table.add_row(
            s.recipe,
            f"{s.hr:.3f}",
            f"{s.ndcg:.3f}",
            f"{s.mrr:.3f}",
            f"{s.coverage:.2f}",
            f"{s.fit_seconds:.2f}",
            f"{s.p99_ms:.2f}",
        )
    console.print(table)


def _evaluation_data(db: SAEngine, data: Path | None) -> tuple[list[Any], list[Any], list[Any]]:
    items, users = load_items(db), load_recipients(db)
    interactions = read_interactions(data) if data else load_interactions(db)
    if data and items and not {i.item_id for i in interactions} & {i.item_id for i in items}:
        items = []  # a file about another catalogue: rank the items it names
    if not interactions:
        where = str(data) if data else "the project"
        raise TailormailError(f"{where} has no interactions to evaluate on")
    return interactions, items, users


def read_interactions(path: Path) -> list[Any]:
    """An interactions file read with the importer's own checks, into a scratch database."""
    with tempfile.TemporaryDirectory() as scratch:
        db = make_db(f"sqlite:///{scratch}/evaluate.db")
        try:
            import_file(db, "interactions", path)
            return load_interactions(db)
        finally:
            db.dispose()


class _Missing:
    attributes: dict[str, Any] = {}


_NO: Any = _Missing()
