"""``tailormail demo``: a simulated population reads real emails; ``vw`` against ``uniform``.

Two campaigns with the same variants and recipe mail the two halves of one synthetic
population: ``demo-vw`` lets the Vowpal Wabbit bandit choose, ``demo-uniform`` is the A/B
split. Everything runs for real on loopback: the scheduler fires the runs, the outbox
backend writes ``.eml`` files, the simulated recipients (``engine.simulation.Reader``) read
them and click tracked links through the tracking server, and the reward join feeds the
clicks back to the policies, round after round.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import random
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from engine.app import Engine
from engine.db import session_scope
from engine.errors import TailormailError
from engine.importer import import_file
from engine.models import RewardRow, RunRow
from engine.pipeline import run_campaign
from engine.report import campaign_report
from engine.scaffold import SOURCE_ROOT
from engine.scheduler import add_one_off, build_scheduler, reward_job
from engine.settings import load_settings
from engine.simulation import INTERESTS, ReadCounts, make_population, oracle_ctr, serve_reader
from engine.web import BackgroundServer

MARKER = ".tailormail-demo"
ARMS = {"demo-vw": "vw", "demo-uniform": "uniform"}  # campaign -> policy (and ``arm``)
ATTRIBUTION_WINDOW = 2.0  # seconds; the simulated readers click well within it
VW_PARAMS: dict[str, Any] = {"epsilon": 0.1}
VARIANTS = (
    ("minimal", "A few picks for you, {{ recipient.first_name }}", "list", "calm"),
    ("visual", "{{ items[0].title }} and more, picked for you", "cards", "friendly"),
    ("urgent", "Trending now: {{ items[0].title }}", "list", "urgent"),
    ("digest", "Your weekly digest: {{ items|length }} top items", "numbered", "calm"),
)
JOB_TIMEOUT = 600.0


@dataclass(frozen=True)
class RoundFigures:
    """One round: what each campaign's recipients read, clicked and were expected to click."""

    round: int
    arms: dict[str, ReadCounts]
    seconds: float


@dataclass
class DemoResult:
    """The demo's figures, round by round, and where its outputs are."""

    directory: Path
    rounds: list[RoundFigures] = field(default_factory=list)
    clicks: int = 0  # clicks the simulated readers made, over HTTP
    unsubscribes: int = 0
    attributed_clicks: int = 0  # rewards that include a click
    oracle_ctr: float = 0.0  # the whole population's, for reference
    chart: Path | None = None
    seconds: float = 0.0

    def curve(self, campaign: str, figure: str) -> list[float]:
        """``realized_ctr``, ``expected_ctr`` or ``oracle_ctr`` of ``campaign`` per round."""
        return [float(getattr(r.arms[campaign], figure)) for r in self.rounds]


def _prepare(directory: Path) -> None:
    """Create the working directory; only a previous demo's directory is wiped."""
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).is_file():
            raise TailormailError(f"{directory} is not empty and is not a demo directory")
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("Created by `tailormail demo`; wiped by the next one.\n")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _toml(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str | bool) else repr(value)


def _write_project(directory: Path, port: int, batch_size: int) -> None:
    config = directory / "config"
    (config / "campaigns").mkdir(parents=True)
    (config / "tailormail.toml").write_text(
        f"""# Written by `tailormail demo`.
database_url = "sqlite:///tailormail.db"
tracking_base_url = "http://127.0.0.1:{port}"
from_address = "alerts@example.com"

[delivery]
backend = "outbox"
batch_size = {batch_size}

[delivery.outbox]
path = "outbox"

[web]
host = "127.0.0.1"
port = {port}
"""
    )
    for name, policy in ARMS.items():
        params = VW_PARAMS if policy == "vw" else {}
        lines = [
            f'name = "{name}"',
            f'description = "Simulated weekly picks ({policy} policy)"',
            "items_per_email = 4",
            f'audience = {{ arm = "{policy}" }}',
            '\n[recipe]\nname = "popularity"',
            f'\n[policy]\nname = "{policy}"',
            *(f"{key} = {_toml(value)}" for key, value in params.items()),
            f'\n[reward]\nclick = 1.0\nunsubscribe = -1.0\nattribution_window = "{ATTRIBUTION_WINDOW:g}s"',
        ]
        for key, subject, layout, tone in VARIANTS:
            lines += [
                f'\n[[variants]]\nkey = "{key}"\nsubject = {_toml(subject)}',
                f'template = "demo/{key}.html"\nfeatures = {{ layout = "{layout}", tone = "{tone}" }}',
            ]
        (config / "campaigns" / f"{name}.toml").write_text("\n".join(lines) + "\n")
    shutil.copytree(SOURCE_ROOT / "templates" / "demo", directory / "templates" / "demo")


def _write_data(directory: Path, people: list[dict[str, Any]], seed: int) -> dict[str, Path]:
    """The audience, a catalogue of 48 items and a month of interactions, as CSV files."""
    rng = random.Random(seed)
    data = directory / "data"
    data.mkdir()
    paths = {kind: data / f"{kind}.csv" for kind in ("recipients", "items", "interactions")}
    with paths["recipients"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(people[0]))
        writer.writeheader()
        writer.writerows(people)
    categories = list(INTERESTS)
    with paths["items"].open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "title", "category", "url"])
        for i in range(1, 49):
            category = categories[i % len(categories)]
            url = f"https://shop.example.com/{category}/i{i:03d}"
            writer.writerow([f"i{i:03d}", f"{category.title()} pick #{i}", category, url])
    start = datetime.now(UTC) - timedelta(days=30)
    with paths["interactions"].open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "item_id", "timestamp"])
        for _ in range(len(people) // 2 + 200):
            item = min(int(rng.paretovariate(1.1)), 48)  # a few items are much more popular
            when = start + timedelta(minutes=rng.randint(0, 30 * 24 * 60))
            writer.writerow([rng.choice(people)["id"], f"i{item:03d}", when.isoformat()])
    return paths


class _Jobs:
    """Queues one-off scheduler jobs and waits for each to finish (or fail)."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self._done: dict[str, threading.Event] = {}
        self._errors: dict[str, BaseException] = {}
        scheduler.add_listener(self._finished, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)

    def _finished(self, event: Any) -> None:
        if event.code != EVENT_JOB_EXECUTED:
            self._errors[event.job_id] = event.exception or RuntimeError("job missed its time")
        self._done[event.job_id].set()

    def queue(self, func: Callable[..., Any], *args: Any, job_id: str) -> None:
        self._done[job_id] = threading.Event()
        add_one_off(self.scheduler, func, *args, job_id=job_id)

    def wait(self, job_id: str) -> None:
        if not self._done[job_id].wait(JOB_TIMEOUT):
            raise TailormailError(f"demo job {job_id} did not finish in {JOB_TIMEOUT:.0f}s")
        if job_id in self._errors:
            raise TailormailError(f"demo job {job_id} failed: {self._errors[job_id]!r}")


class _Readers:
    """The simulated recipients, reading in a child process while the campaigns send."""

    def __init__(self, outbox: Path, people: list[dict[str, Any]], seed: int) -> None:
        context = multiprocessing.get_context("spawn")  # never fork a process with threads
        self.conn, child = context.Pipe()
        args = (child, str(outbox), people, seed)
        self.process = context.Process(target=serve_reader, args=args, daemon=True)
        self.totals: dict[str, ReadCounts] = {}

    def __enter__(self) -> _Readers:
        self.process.start()
        return self

    def drain(self) -> dict[str, ReadCounts]:
        """Everything read since the last drain, per campaign, once the outbox is read."""
        self.conn.send("drain")
        if not self.conn.poll(JOB_TIMEOUT):
            raise TailormailError("the simulated readers did not answer")
        kind, payload = self.conn.recv()
        if kind == "error":
            raise TailormailError(f"the simulated readers failed: {payload}")
        counts: dict[str, ReadCounts] = {name: ReadCounts() for name in ARMS} | payload
        for name, read in counts.items():
            self.totals.setdefault(name, ReadCounts()).add(read)
        return counts

    def __exit__(self, *exc: object) -> None:
        if self.process.is_alive():
            self.conn.send("stop")
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
        self.conn.close()


def _progress(console: Console) -> Progress:
    columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn())
    return Progress(*columns, TimeElapsedColumn(), console=console)


def run_demo(
    directory: Path,
    *,
    rounds: int = 10,
    recipients: int = 3000,
    seed: int = 7,
    console: Console | None = None,
    batch_size: int = 250,
) -> DemoResult:
    """Run the simulation in ``directory`` (re-created); print figures, draw the chart."""
    console = console or Console()
    started = time.monotonic()
    directory = Path(directory).resolve()
    _prepare(directory)
    people = make_population(recipients, seed)
    port = _free_port()  # known before the config, so the emails' links point at the server
    _write_project(directory, port, batch_size)
    paths = _write_data(directory, people, seed)
    result = DemoResult(directory, oracle_ctr=oracle_ctr(people))
    with Engine(settings=load_settings(directory, environ={})) as engine:
        for kind, path in paths.items():
            import_file(engine.db, kind, path)
        scheduler = build_scheduler(engine, start_rewards=False)
        jobs = _Jobs(scheduler)
        with (
            BackgroundServer(engine, "127.0.0.1", port),
            _Readers(directory / "outbox", people, seed) as readers,
            _progress(console) as progress,
        ):
            scheduler.start()
            try:
                _rounds(engine, jobs, readers, progress, result, rounds)
            finally:
                scheduler.shutdown(wait=True)
        result.clicks = sum(c.clicks for c in readers.totals.values())
        result.unsubscribes = sum(c.unsubscribes for c in readers.totals.values())
        with session_scope(engine.db) as session:
            rows = session.scalars(select(RewardRow.event_types)).all()
        result.attributed_clicks = sum("click" in (types or []) for types in rows)
        result.chart = _chart(result, directory / "learning_curve.png")
        result.seconds = time.monotonic() - started
        _print_summary(engine, result, console)
    return result


def _rounds(
    engine: Engine, jobs: _Jobs, readers: _Readers, progress: Progress, result: DemoResult, n: int
) -> None:
    overall = progress.add_task("rounds", total=n)
    sends = {name: progress.add_task(f"sending {name}", total=None) for name in ARMS}
    for number in range(1, n + 1):
        began = time.monotonic()
        for task in sends.values():
            progress.reset(task, total=None)
        run_ids = {name: f"{name}@round-{number:02d}" for name in ARMS}
        for name, run_id in run_ids.items():

            def advance(done: int, total: int, task: Any = sends[name]) -> None:
                progress.update(task, completed=done, total=total)

            job = partial(run_campaign, run_id=run_id, progress=advance)
            jobs.queue(job, engine, name, job_id=run_id)
        for run_id in run_ids.values():
            jobs.wait(run_id)
        sent = time.monotonic()
        counts = readers.drain()
        with session_scope(engine.db) as session:
            finished = session.scalar(
                select(func.count())
                .select_from(RunRow)
                .where(RunRow.id.in_(list(run_ids.values())))  # type: ignore[attr-defined]
                .where(RunRow.status == "finished")  # type: ignore[arg-type]
            )
        if finished != len(run_ids):
            raise TailormailError(f"round {number}: not every campaign run finished")
        time.sleep(max(0.0, sent + ATTRIBUTION_WINDOW + 0.2 - time.monotonic()))
        rewards_id = f"rewards@round-{number:02d}"
        jobs.queue(reward_job, engine, job_id=rewards_id)
        jobs.wait(rewards_id)
        figures = RoundFigures(number, counts, time.monotonic() - began)
        result.rounds.append(figures)
        vw, uniform = counts["demo-vw"], counts["demo-uniform"]
        progress.console.print(
            f"round {number:2d}: vw {vw.realized_ctr:6.1%} (expected {vw.expected_ctr:.1%})"
            f"  uniform {uniform.realized_ctr:6.1%} (expected {uniform.expected_ctr:.1%})"
            f"  oracle {vw.oracle_ctr:.1%}  [{figures.seconds:.1f}s]"
        )
        progress.advance(overall)


def _chart(result: DemoResult, path: Path) -> Path:
    """The learning curve: expected CTR as lines, realized CTR as points, per round."""
    figure = Figure(figsize=(8, 4.8), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    x = [r.round for r in result.rounds]
    styles = {"demo-vw": ("tab:blue", "vw (bandit)"), "demo-uniform": ("tab:orange", "uniform")}
    for name, (colour, label) in styles.items():
        axes.plot(x, result.curve(name, "expected_ctr"), color=colour, lw=2, label=f"{label}")
        axes.scatter(x, result.curve(name, "realized_ctr"), color=colour, s=22, alpha=0.6)
    oracle = [(a + b) / 2 for a, b in zip(*(result.curve(n, "oracle_ctr") for n in ARMS))]
    axes.plot(x, oracle, color="tab:green", lw=1.5, ls="--", label="oracle")
    axes.scatter([], [], color="grey", s=22, label="realized (points)")
    axes.set_xlabel("round")
    axes.set_ylabel("click-through rate")
    axes.set_xticks(x)
    axes.yaxis.set_major_formatter(lambda value, _pos: f"{value:.0%}")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title("tailormail demo: expected CTR (lines) and realized CTR (points)")
    figure.tight_layout()
    figure.savefig(path)
    return path


def _print_summary(engine: Engine, result: DemoResult, console: Console) -> None:
    table = Table(title="CTR per round: realized (expected)")
    for column in ("round", "vw", "uniform", "oracle"):
        table.add_column(column, justify="right")
    for r in result.rounds:
        vw, uniform = r.arms["demo-vw"], r.arms["demo-uniform"]
        table.add_row(
            str(r.round),
            f"{vw.realized_ctr:.1%} ({vw.expected_ctr:.1%})",
            f"{uniform.realized_ctr:.1%} ({uniform.expected_ctr:.1%})",
            f"{(vw.oracle_ctr + uniform.oracle_ctr) / 2:.1%}",
        )
    console.print(table)
    for name in ARMS:
        report = Table(title=f"campaign {name}")
        for column in ("variant", "sends", "clicks", "CTR", "95% interval", "unsubscribes"):
            report.add_column(column, justify="left" if column == "variant" else "right")
        for row in campaign_report(engine, name):
            low, high = row.ctr_interval
            report.add_row(
                row.variant,
                str(row.sends),
                str(row.clicks),
                f"{row.ctr:.1%}",
                f"{low:.1%} - {high:.1%}",
                str(row.unsubscribes),
            )
        console.print(report)
    late = result.clicks - result.attributed_clicks
    console.print(
        f"{result.clicks} clicks and {result.unsubscribes} unsubscribes over HTTP"
        + (f" ({late} clicks arrived after their attribution window)" if late else "")
        + f"; learning curve: {result.chart}; {result.seconds:.0f}s in all."
    )
