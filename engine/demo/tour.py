"""``tailormail demo``: simulated recipients read real emails; ``vw`` against two A/B tests.

Three campaigns with the same variants mail the thirds of one synthetic population: in
``demo-vw`` the bandit chooses with its default settings, ``demo-uniform`` is a plain
uniform split and ``demo-abtest`` the A/B test a team would run (split, name a winner,
roll it out). All of it runs for real on loopback: scheduler, outbox, tracking server,
clicks over HTTP, reward join, learning.

The time is simulated (``engine.clock.SimulatedClock``): each round is a day, sent at
09:00, and the clock stands still while the readers click, so every click carries the
send's time and lands inside its attribution window however slow the machine is. Then
the clock moves past the window and the reward job joins the round, as it would the next
morning.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import random
import shutil
import socket
import string
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress, TaskID
from rich.table import Table
from sqlalchemy import select

from engine.app import Engine
from engine.audience.importer import import_file
from engine.clock import SimulatedClock, use_clock
from engine.db import session_scope
from engine.demo.content import ContentFigures, compare_round
from engine.demo.simulation import (
    ReadCounts,
    make_catalogue,
    make_population,
    read_round,
    start_reader,
)
from engine.errors import TailormailError
from engine.models import RewardRow
from engine.reports.variants import campaign_report
from engine.scaffold import SOURCE_ROOT, write_csv
from engine.sending.real_run import run_campaign
from engine.sending.scheduler import add_one_off, build_scheduler, reward_job
from engine.settings import load_settings
from engine.web import BackgroundServer

MARKER = ".tailormail-demo"
ARMS = {"demo-vw": "vw", "demo-uniform": "uniform", "demo-abtest": "abtest"}  # -> policy, arm
ATTRIBUTION_WINDOW = 20 * 3600.0  # simulated seconds: closed by the next morning's reward job
ROUND_INTERVAL = timedelta(days=1)  # simulated: one round a day
VARIANTS = (  # key, subject, layout, tone
    ("minimal", "A few picks for you, {{ recipient.first_name }}", "list", "calm"),
    ("visual", "{{ items[0].title }} and more, picked for you", "cards", "friendly"),
    ("urgent", "Trending now: {{ items[0].title }}", "list", "urgent"),
    ("digest", "Your weekly digest: {{ items|length }} top items", "numbered", "calm"),
)
SETTINGS = string.Template("""# Written by `tailormail demo`.
database_url = "sqlite:///tailormail.db"
tracking_base_url = "http://127.0.0.1:$port"
from_address = "alerts@example.com"
delivery = { backend = "outbox", batch_size = $batch_size, outbox = { path = "outbox" } }
web = { host = "127.0.0.1", port = $port }
""")
CAMPAIGN = string.Template("""description = "Simulated weekly picks ($policy policy)"
items_per_email = 4
audience = { arm = "$policy" }
email_click_weight = $click_weight
recipe = { name = "personalize", $recipe }
policy = { name = "$policy" }  # the policy's defaults: nothing tuned
reward = { click = 1.0, unsubscribe = -1.0, attribution_window = "${window}s" }
""")
VARIANT = string.Template("""
[[variants]]
key = "$key"
subject = "$subject"
template = "demo/$key.html"
features = { layout = "$layout", tone = "$tone" }
""")
TIMEOUT = 600.0
# The content loop: a click inside our email counts three imported interactions; the recipe
# leans on what a reader's segment and their own clicks say about the items' categories.
CLICK_WEIGHT = 3.0
RECIPE_PARAMS = (
    'segment_by = ["interest"], segment_weight = 3.0, attribute_weight = 2.0, '
    "similarity_weight = 0.3"
)


@dataclass(frozen=True)
class RoundFigures:
    """One round: what the readers of each campaign read, clicked and were expected to click."""

    round: int
    arms: dict[str, ReadCounts]
    content: ContentFigures | None = None  # item CTRs with and without email clicks


@dataclass
class DemoResult:
    """The demo's figures round by round, and where its outputs are."""

    directory: Path
    rounds: list[RoundFigures] = field(default_factory=list)
    clicks: int = 0  # clicks the simulated readers made over HTTP
    unsubscribes: int = 0
    attributed_clicks: int = 0  # rewards that include a click
    late_clicks: int = 0  # clicking readers whose reward has no click: after the window
    chart: Path | None = None
    seconds: float = 0.0

    def curve(self, campaign: str, figure: str) -> list[float]:
        """``realized_ctr``, ``expected_ctr`` or ``oracle_ctr`` of ``campaign`` per round."""
        return [float(getattr(r.arms[campaign], figure)) for r in self.rounds]


def _write_project(directory: Path, port: int, batch_size: int, window: float) -> None:
    """Settings, the two campaigns, and their templates copied from the source tree, in a
    new directory (or one a previous demo made: nothing else is ever wiped)."""
    if any(directory.glob("*")) and not (directory / MARKER).is_file():
        raise TailormailError(f"{directory} is not empty and not a demo directory")
    shutil.rmtree(directory, ignore_errors=True)  # a failure shows in the mkdir below
    (directory / "config" / "campaigns").mkdir(parents=True)
    (directory / MARKER).write_text("Made by `tailormail demo`; the next demo wipes it.\n")
    settings = SETTINGS.substitute(port=port, batch_size=batch_size)
    (directory / "config" / "tailormail.toml").write_text(settings)
    for name, policy in ARMS.items():
        text = CAMPAIGN.substitute(
            policy=policy, window=window, click_weight=CLICK_WEIGHT, recipe=RECIPE_PARAMS
        )
        for key, subject, layout, tone in VARIANTS:
            text += VARIANT.substitute(key=key, subject=subject, layout=layout, tone=tone)
        (directory / "config" / "campaigns" / f"{name}.toml").write_text(text)
    shutil.copytree(SOURCE_ROOT / "templates" / "demo", directory / "templates" / "demo")


def _write_data(directory: Path, people: list[dict[str, Any]], seed: int) -> dict[str, Path]:
    """The audience, a catalogue of 48 items and a month of interactions, as CSV files."""
    rng = random.Random(seed)
    tables: dict[str, list[Sequence[Any]]] = {
        "recipients": [list(people[0]), *(list(person.values()) for person in people)],
        "items": [("id", "title", "category", "url")],
        "interactions": [("user_id", "item_id", "timestamp")],
    }
    tables["items"].extend(make_catalogue())
    start = datetime.now(UTC) - timedelta(days=30)
    for _ in range(len(people) // 2 + 200):
        item = min(int(rng.paretovariate(1.1)), 48)  # a few items are much more popular
        when = start + timedelta(minutes=rng.randint(0, 30 * 24 * 60))
        tables["interactions"].append((rng.choice(people)["id"], f"i{item:03d}", when.isoformat()))
    (directory / "data").mkdir()
    return {
        kind: write_csv(directory / "data" / f"{kind}.csv", list(rows[0]), rows[1:])
        for kind, rows in tables.items()
    }


def _run_jobs(scheduler: Any, jobs: Mapping[str, Callable[[], Any]]) -> None:
    """Run the jobs on the scheduler (concurrently), wait for all, re-raise a failure."""
    outcomes: dict[str, Future[Any]] = {job_id: Future() for job_id in jobs}
    for job_id, job in jobs.items():
        add_one_off(scheduler, _settle, outcomes[job_id], job, job_id=job_id)
    for outcome in outcomes.values():
        outcome.result(timeout=TIMEOUT)


def _settle(outcome: Future[Any], job: Callable[[], Any]) -> None:
    try:
        outcome.set_result(job())
    except BaseException as exc:  # the demo's thread re-raises it
        outcome.set_exception(exc)


def run_demo(
    directory: Path,
    *,
    rounds: int = 10,
    recipients: int = 1000,
    seed: int = 7,
    console: Console | None = None,
    batch_size: int = 100,  # small batches let the readers keep up with the sending
    attribution_window: float = ATTRIBUTION_WINDOW,
) -> DemoResult:
    """Run the simulation in ``directory`` (re-created); print the figures, draw the chart.

    Rounds are simulated days and ``attribution_window`` is in simulated seconds: the
    clock stands still while the readers click, so no round waits on the wall clock and a
    loaded machine loses no click. The defaults take about two minutes on two cores.
    """
    console = console or Console()
    started = time.monotonic()
    directory = Path(directory).resolve()
    people = make_population(recipients, seed)
    with socket.socket() as sock:  # a free port first, so the emails' links point at it
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    _write_project(directory, port, batch_size, attribution_window)
    result = DemoResult(directory)
    start = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)
    clock = SimulatedClock(start + ROUND_INTERVAL)  # tomorrow 09:00: after the data's month
    with use_clock(clock), Engine(settings=load_settings(directory, environ={})) as engine:
        for kind, path in _write_data(directory, people, seed).items():
            import_file(engine.db, kind, path)
        scheduler = build_scheduler(engine, start_rewards=False)
        spawn = multiprocessing.get_context("spawn")  # never fork a process running threads
        finished = spawn.Event()  # set when a round's runs are done: read what is left
        reader = (str(directory / "outbox"), people, seed, finished)
        columns = (*Progress.get_default_columns()[:-1], MofNCompleteColumn())
        with (
            BackgroundServer(engine, "127.0.0.1", port) as server,
            ProcessPoolExecutor(1, spawn, start_reader, reader) as readers,
            Progress(*columns, console=console) as progress,
        ):
            bars = {name: progress.add_task(f"sending {name}", total=None) for name in ARMS}
            overall = progress.add_task("rounds", total=rounds)
            scheduler.start()
            try:
                for number in range(1, rounds + 1):
                    reading = readers.submit(read_round)
                    readers_ = (reading, finished, server)
                    clock.set(start + number * ROUND_INTERVAL)
                    figures = _round(engine, scheduler, readers_, progress, bars, number, clock)
                    figures = dataclasses.replace(
                        figures, content=_content(engine, people, number, figures.arms)
                    )
                    result.rounds.append(figures)
                    ctr = (f"{ARMS[n]} {figures.arms[n].expected_ctr:.1%}" for n in ARMS)
                    text = f"round {number}: expected CTR " + ", ".join(ctr)
                    progress.update(overall, advance=1, description=text)
            finally:
                finished.set()  # a round cut short must not leave the readers waiting
                scheduler.shutdown(wait=True)
        with session_scope(engine.db) as session:
            kinds = session.scalars(select(RewardRow.event_types)).all()  # type: ignore[call-overload]
        result.attributed_clicks = sum("click" in (k or []) for k in kinds)
        result.clicks = sum(r.arms[n].clicks for r in result.rounds for n in ARMS)
        result.late_clicks = result.clicks - result.attributed_clicks
        result.unsubscribes = sum(r.arms[n].unsubscribes for r in result.rounds for n in ARMS)
        result.chart = _chart(result, directory / "learning_curve.png")
        result.seconds = time.monotonic() - started
        _print_summary(engine, result, console)
    return result


def _round(
    engine: Engine,
    scheduler: Any,
    readers: Any,
    progress: Progress,
    bars: Any,
    number: int,
    clock: SimulatedClock,
) -> RoundFigures:
    """Send the campaigns and let the readers click at the send's simulated time; then move
    the clock past the attribution window and join the rewards."""
    runs = {}
    for name, bar in bars.items():
        progress.reset(bar, total=None)
        run_id = f"{name}@round-{number:02d}"
        advance = partial(_advance, progress, bar)
        runs[run_id] = partial(run_campaign, engine, name, run_id=run_id, progress=advance)
    _run_jobs(scheduler, runs)
    reading, finished, server = readers
    finished.set()  # the readers read what is left, then answer
    counts = {name: ReadCounts() for name in ARMS} | reading.result(timeout=TIMEOUT)
    finished.clear()
    server.drain()  # the clicks are in the database before their rewards are joined
    window = max(c.reward.attribution_window for c in engine.campaigns.values())
    clock.advance(window + timedelta(seconds=1))  # every window of the round has closed
    _run_jobs(scheduler, {f"rewards@round-{number:02d}": partial(reward_job, engine)})
    return RoundFigures(number, counts)


def _content(
    engine: Engine, people: list[dict[str, Any]], number: int, reads: dict[str, ReadCounts]
) -> ContentFigures:
    """The round's item CTRs: the recipe fed by email clicks against the same without."""
    run_ids = {name: f"{name}@round-{number:02d}" for name in ARMS}
    return compare_round(engine, {p["id"]: p for p in people}, run_ids, reads)


def _ctr(read: ReadCounts) -> str:
    return f"{read.realized_ctr:.1%} ({read.expected_ctr:.1%})"


def _advance(progress: Progress, bar: TaskID, done: int, total: int) -> None:
    progress.update(bar, completed=done, total=total)


def _chart(result: DemoResult, path: Path) -> Path:
    """The learning curve: expected CTR as lines, realized CTR as points, per round."""
    figure = Figure(figsize=(8, 4.8), dpi=110, layout="tight")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    x = [r.round for r in result.rounds]
    for colour, (name, label) in zip(("C0", "C1", "C3"), ARMS.items(), strict=True):
        expected, realized = result.curve(name, "expected_ctr"), result.curve(name, "realized_ctr")
        axes.plot(x, expected, color=colour, lw=2, label=f"{label}, expected")
        axes.scatter(x, realized, color=colour, s=24, alpha=0.7, label=f"{label}, realized")
    oracle = result.curve("demo-vw", "oracle_ctr")
    axes.plot(x, oracle, color="C2", lw=1.5, ls="--", label="oracle: best variant for each")
    axes.set(title="tailormail demo: the bandit against A/B tests", xlabel="round", xticks=x)
    axes.set(ylabel="click-through rate", ylim=(0, None))
    axes.yaxis.set_major_formatter(lambda value, _pos: f"{value:.0%}")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize="small", ncols=2)
    figure.savefig(path)
    return path


def _print_summary(engine: Engine, result: DemoResult, console: Console) -> None:
    def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
        table = Table(*columns, title=title)
        for row in rows:
            table.add_row(*row)
        return table

    rounds = [
        (str(r.round), *map(_ctr, (r.arms[n] for n in ARMS)), f"{r.arms['demo-vw'].oracle_ctr:.1%}")
        for r in result.rounds
    ]
    console.print(table("CTR per round: realized (expected)", ("round", *ARMS, "oracle"), rounds))
    content = [
        (str(r.round), f"{c.realized:.2%} ({c.expected_with:.2%})", f"{c.expected_without:.2%}")
        for r in result.rounds
        if (c := r.content) is not None
    ]
    content_columns = ("round", "fed by email clicks: realized (expected)", "without (expected)")
    console.print(table("item CTR per round, the recipe", content_columns, content))
    for name in ARMS:
        columns = ("variant", "sends", "clicks", "CTR", "95% interval", "unsubscribes")
        rows = [
            (v.variant, str(v.sends), str(v.clicks), f"{v.ctr:.1%}")
            + (f"{v.ctr_interval[0]:.1%} - {v.ctr_interval[1]:.1%}", str(v.unsubscribes))
            for v in campaign_report(engine, name)
        ]
        console.print(table(f"campaign {name}", columns, rows))
    tail = result.rounds[-3:]  # once the learners had a few rounds of rewards
    expected = {
        ARMS[name]: sum(r.arms[name].expected_clicks for r in tail)
        / max(1, sum(r.arms[name].emails for r in tail))
        for name in ARMS
    }
    console.print(
        f"expected CTR over the last {len(tail)} rounds: "
        + ", ".join(f"{policy} {ctr:.1%}" for policy, ctr in expected.items())
        + f" (oracle {tail[-1].arms['demo-vw'].oracle_ctr:.1%})" * bool(tail)
    )
    late = result.late_clicks
    console.print(
        f"{result.clicks} clicking readers over HTTP: {result.attributed_clicks} attributed "
        f"as rewards, {'none' if late == 0 else late} late (after the attribution window); "
        f"{result.unsubscribes} unsubscribes."
    )
    console.print(f"learning curve in {result.chart}; {result.seconds:.0f}s in all.")
