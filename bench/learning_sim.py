"""The learning benchmark's simulated population and one policy's simulated campaign.

See ``bench/learning.py`` for what is measured. Everything here runs through the engine:
the audience is imported, every day's run goes through ``run_campaign`` (eligibility,
features, the policy's decision, the ledger, rendering, a delivery backend), the clicks
are stored as tracking events and ``join_rewards`` closes the windows and lets the policy
learn. Only the clock (``engine.clock``) and the delivery backend (``discard``) are the
benchmark's own.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from engine import EventType, TrackingEvent, hookimpl
from engine.app import Engine
from engine.audience.importer import import_file
from engine.clock import SimulatedClock, use_clock
from engine.db import session_scope
from engine.feedback.events import record_events
from engine.feedback.reward_job import join_rewards
from engine.learning import champions
from engine.models import LedgerRow, LedgerStatus
from engine.sending.real_run import run_campaign
from engine.settings import load_settings
from engine.types import DeliveryBackend, Message, SendResult, SendStatus

VARIANTS = {  # key -> features
    "minimal": {"layout": "list", "tone": "calm"},
    "visual": {"layout": "cards", "tone": "friendly"},
    "urgent": {"layout": "list", "tone": "urgent"},
    "digest": {"layout": "numbered", "tone": "calm"},
}
ATTRIBUTES = {
    "age_band": {"young": 0.35, "middle": 0.40, "senior": 0.25},
    "device": {"mobile": 0.6, "desktop": 0.4},
    "interest": {"news": 0.25, "style": 0.25, "deals": 0.25, "books": 0.25},
}
BASE = 0.02
LIFTS: dict[str, dict[str, float]] = {  # "attribute=value" -> variant -> lift
    "age_band=young": {"visual": 0.05},
    "age_band=middle": {"minimal": 0.02, "urgent": 0.045},
    "age_band=senior": {"digest": 0.05},
    "device=mobile": {"visual": 0.02, "urgent": 0.02},
    "device=desktop": {"minimal": 0.03, "digest": 0.015},
} | {f"interest={i}": {v: 0.01} for i, v in zip(ATTRIBUTES["interest"], VARIANTS, strict=True)}
NAMES = ("Ada", "Grace", "Alan", "Barbara", "Donald", "Frances", "Ken", "Radia")
DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "orange.fr", "example.org")
ZONES = ("Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC")
START = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)  # a Monday, 09:00
WINDOW = "20h"  # closed by the next morning's reward job
POLICIES: dict[str, tuple[str, dict[str, Any]]] = {  # benchmark key -> (policy, parameters)
    "uniform": ("uniform", {}),
    "abtest": ("abtest", {}),
    "thompson": ("thompson", {}),
    "vw": ("vw", {}),  # the defaults: nothing tuned
    "vw_squarecb": ("vw", {"exploration": "squarecb"}),  # SquareCB over mtr, rate 0.1
    "vw_bag": (  # the demo's former hand-tuned settings
        "vw",
        {"exploration": "bag", "epsilon": 0.05, "learning_rate": 0.05, "cb_type": "dm"},
    ),
}


def click_probability(person: Mapping[str, Any], variant: str) -> float:
    """The chance that ``person`` clicks an email of ``variant``."""
    lifts = (LIFTS.get(f"{a}={person[a]}", {}).get(variant, 0.0) for a in ATTRIBUTES)
    return BASE + sum(lifts)


def population(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` recipients with their attributes, drawn independently (seeded)."""
    rng = random.Random(seed)
    people = []
    for i in range(n):
        name = rng.choice(NAMES)
        person = {"id": f"r{i:06d}", "email": f"{name.lower()}.{i}@{rng.choice(DOMAINS)}"}
        person |= {"first_name": name, "timezone": rng.choice(ZONES)}
        for attribute, shares in ATTRIBUTES.items():
            person[attribute] = rng.choices(list(shares), weights=list(shares.values()))[0]
        people.append(person)
    return people


class DiscardBackend(DeliveryBackend):
    """Accepts every message and keeps none: the benchmark measures decisions, not mail."""

    name = "discard"

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        """Every message is sent."""
        return [SendResult(m.send_id, SendStatus.SENT, provider_id=m.message_id) for m in messages]


class BenchPlugin:
    """Registers the ``discard`` backend."""

    @hookimpl
    def register_backends(self, register: Callable[[str, Any], None]) -> None:
        """Register ``discard``."""
        register("discard", DiscardBackend)


def _toml(value: Any) -> str:
    return json.dumps(value)  # strings, numbers and lists read the same in TOML


def write_project(directory: Path, policy: str, params: Mapping[str, Any]) -> None:
    """Settings, one campaign with the four variants, and their templates."""
    (directory / "config" / "campaigns").mkdir(parents=True)
    (directory / "templates" / "bench").mkdir(parents=True)
    (directory / "config" / "tailormail.toml").write_text(
        'database_url = "sqlite:///bench.db"\nfrom_address = "alerts@example.com"\n'
        'delivery = { backend = "discard", batch_size = 500 }\n'
    )
    pairs = [("name", policy), *params.items()]
    table = ", ".join(f"{key} = {_toml(value)}" for key, value in pairs)
    campaign = [
        'name = "bench"',
        "items_per_email = 0",
        f"policy = {{ {table} }}",
        f'reward = {{ click = 1.0, attribution_window = "{WINDOW}" }}',
    ]
    for key, features in VARIANTS.items():
        inline = ", ".join(f"{k} = {_toml(v)}" for k, v in features.items())
        campaign += [
            "[[variants]]",
            f'key = "{key}"',
            f'subject = "{key.title()} picks"',
            f'template = "bench/{key}.html"',
            f"features = {{ {inline} }}",
        ]
        (directory / "templates" / "bench" / f"{key}.html").write_text(
            f"<html><body><p>{key} for {{{{ recipient.email }}}}</p>"
            f'<a href="https://example.com/{key}">open</a></body></html>\n'
        )
    (directory / "config" / "campaigns" / "bench.toml").write_text("\n".join(campaign) + "\n")
    columns = ["id", "email", "first_name", "timezone", *ATTRIBUTES]
    (directory / "people.csv").write_text(",".join(columns) + "\n")


def run_policy(
    name: str,
    directory: Path,
    recipients: int,
    days: int,
    seed: int,
    progress: MutableMapping[str, int] | None = None,
) -> dict[str, Any]:
    """Simulate ``days`` daily sends of the campaign under policy ``name``; its figures."""
    started = time.perf_counter()
    policy, params = POLICIES[name]
    write_project(directory, policy, params)
    people = population(recipients, seed)
    with (directory / "people.csv").open("a") as csv:
        for person in people:
            csv.write(",".join(str(person[c]) for c in person) + "\n")
    by_id = {person["id"]: (i, person) for i, person in enumerate(people)}
    chosen: list[float] = []
    best: list[float] = []
    result: dict[str, Any] = {"params": params}
    settings = load_settings(directory, environ={"TAILORMAIL_SECRET": "learning-bench-" + "x" * 32})
    clock = SimulatedClock(START)
    with use_clock(clock), Engine(settings=settings, plugins=[BenchPlugin()]) as engine:
        import_file(engine.db, "recipients", directory / "people.csv")
        for day in range(days):
            clock.set(START + timedelta(days=day))
            run_campaign(engine, "bench", run_id=f"day-{day:03d}")
            coins = random.Random(seed * 1_000_003 + day)  # the same coins for every policy
            flips = [coins.random() for _ in people]
            minutes = [coins.randrange(360) for _ in people]
            with session_scope(engine.db) as session:
                stmt = (
                    select(LedgerRow.id, LedgerRow.recipient_id, LedgerRow.variant)
                    .where(LedgerRow.run_id == f"day-{day:03d}")
                    .where(LedgerRow.status == LedgerStatus.SENT)
                    .order_by(LedgerRow.id)
                )
                sent = session.execute(stmt).all()
            events = []
            for send_id, recipient_id, variant in sent:
                index, person = by_id[recipient_id]
                p = click_probability(person, variant)
                chosen.append(p)
                best.append(max(click_probability(person, v) for v in VARIANTS))
                if flips[index] < p:
                    when = clock() + timedelta(minutes=minutes[index])
                    click = TrackingEvent(EventType.CLICK, send_id, when, url="https://x")
                    events.append((click, f"bench:{send_id}"))
            record_events(engine, events)
            clock.advance(timedelta(hours=23))
            join_rewards(engine, campaign="bench")
            if policy == "abtest":
                _note_test(engine, result, day, len(chosen))
            if progress is not None:
                progress[name] = day + 1
    result.update(summarize(chosen, best, days))
    result["seconds"] = time.perf_counter() - started
    return result


def _note_test(engine: Engine, result: dict[str, Any], day: int, sends: int) -> None:
    """Record when the A/B test dropped variants and named its winner."""
    champion = champions.champion(engine.db, engine.campaign("bench"))
    state = json.loads(champion.blob) if champion is not None else {}
    events = result.setdefault("test", {})
    for variant in state.get("dropped", {}):
        events.setdefault(f"dropped {variant}", {"day": day + 1, "after_sends": sends})
    if state.get("winner"):
        events.setdefault(f"winner {state['winner']}", {"day": day + 1, "after_sends": sends})
    notes = [f"{what} on day {e['day']} ({e['after_sends']:,} sends)" for what, e in events.items()]
    if not any(what.startswith("winner") for what in events):
        notes.append(f"no winner after {sends:,} sends")
    result["note"] = "; ".join(notes)


def summarize(chosen: Sequence[float], best: Sequence[float], days: int) -> dict[str, Any]:
    """Sends, CTR over the last 20% of sends, regret and the expected CTR per day."""
    n = len(chosen)
    last = slice(int(n * 0.8), n)
    per_day = max(1, n // days)
    return {
        "sends": n,
        "ctr_last": sum(chosen[last]) / max(1, len(chosen[last])),
        "regret": sum(best) - sum(chosen),
        "daily_ctr": [
            sum(chosen[i : i + per_day]) / len(chosen[i : i + per_day])
            for i in range(0, n, per_day)
        ],
        "best": list(best),
    }


def oracle_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """The oracle on the same sends: everyone gets their own best variant."""
    best = result["best"]
    figures = summarize(best, best, len(result["daily_ctr"]))
    return figures | {"note": "everyone gets their best variant"}
