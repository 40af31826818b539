"""End-to-end campaign runs against a floor loop: emails per second and peak memory.

A run (audience, eligibility, features, recipe, decision, render, ledger, delivery) of
the sample project's campaign, sent through the ``null`` backend (each message built and
serialized, then dropped), for several audience sizes on SQLite and one on PostgreSQL,
plus the outbox backend for reference. Each run happens in a fresh subprocess (the
recipients are seeded by another one), so its peak RSS is its own. The floor loop does,
for the same kind of recipients, only what no run can avoid: a VW prediction, the Jinja
render and the ``email.mime`` serialization. ``floor_render`` is the honest floor: the
product's own ``Renderer.render`` and ``message_bytes`` alone, in the project the run
sent, timed per variant half before and half after the run, and weighed with the
variants the run sent; each run prints its ratio to it (``<run>.of_floor_render``) and
where its time went, stage by stage (``<run>.stages.<stage>.share``,
``engine.sending.stages``). ``--json FILE`` writes the figures.

    python bench/campaign.py                       # 10k, 100k, 1M on SQLite; 100k on PG
    python bench/campaign.py --sqlite 10000 --postgres "" --outbox 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from email import charset
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_ADMIN_URL = os.environ.get(
    "TAILORMAIL_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
CAMPAIGN = "weekly-picks"
FIRST_NAMES = ["Alan", "Barbara", "Chen", "Dana", "Emil", "Fatou", "Gita", "Hugo"]
COUNTRIES = ["FR", "ES", "DE", "BE", "IT"]
PLANS = ["free", "premium"]


def person(i: int) -> tuple[str, str, dict[str, Any]]:
    """The ``i``-th synthetic recipient: id, address, attributes (the sample's columns)."""
    rng = random.Random(i)
    name = FIRST_NAMES[i % len(FIRST_NAMES)]
    attributes = {"first_name": name, "country": rng.choice(COUNTRIES), "plan": rng.choice(PLANS)}
    return f"u{i:08d}", f"{name.lower()}.{i}@example.com", attributes


# -- the project ----------------------------------------------------------------------------
def make_project(root: Path, database_url: str, backend: str) -> None:
    """The sample project (``tailormail init``) pointed at ``database_url`` and ``backend``."""
    from engine.scaffold import scaffold_project

    scaffold_project(root, force=True)
    config = root / "config" / "tailormail.toml"
    text = config.read_text()
    text = text.replace(
        'database_url = "sqlite:///tailormail.db"', f'database_url = "{database_url}"'
    )
    text = text.replace('backend = "outbox"', f'backend = "{backend}"')
    text = text.replace("batch_size = 100", "batch_size = 500")
    config.write_text(text)


def open_engine(root: Path) -> Any:
    from engine.app import Engine

    return Engine(project_dir=root, load_entry_points=False)


def seed(root: Path, size: int) -> None:
    """Insert ``size`` recipients in chunks, then the sample's items and interactions."""
    from sqlalchemy import insert

    from engine.audience.importer import import_file
    from engine.models import RecipientRow, utcnow

    engine = open_engine(root)
    table = RecipientRow.__table__  # type: ignore[attr-defined]
    now = utcnow()
    chunk = 5000
    with engine.db.begin() as conn:
        for start in range(0, size, chunk):
            rows = []
            for i in range(start, min(size, start + chunk)):
                rid, email, attributes = person(i)
                rows.append(
                    {"id": rid, "email": email, "attributes": attributes, "created_at": now}
                )
            conn.execute(insert(table), rows)
    import_file(engine.db, "items", root / "items.csv")
    import_file(engine.db, "interactions", root / "interactions.csv")
    engine.close()


def run(root: Path, size: int) -> dict[str, Any]:
    """One campaign run over the seeded audience: rate, this process's peak RSS, the
    variants it sent (``floor_render`` pins that mix) and each stage's share of its time
    (measured in this process: a sharded run's stages happen in its workers)."""
    from engine.sending.real_run import real_run
    from engine.sending.stages import StageTimes

    engine = open_engine(root)
    start, cpu, busy = time.perf_counter(), cpu_seconds(), busy_seconds()
    children = cpu_seconds(resource.RUSAGE_CHILDREN)
    run = real_run(engine, engine.campaign(CAMPAIGN), "bench")
    run.stages = stages = StageTimes()
    summary = run.execute()
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    busy = busy_seconds() - busy
    children = cpu_seconds(resource.RUSAGE_CHILDREN) - children
    if summary.sent != size:
        raise SystemExit(f"expected {size} sent, the run says {summary}")
    sharded = engine.settings.workers.executor != "inline"
    if sharded:
        coordinator = sent_by_this_process(engine)
        if coordinator:  # a shard failed, or the workers never ran: not a sharded figure
            raise SystemExit(f"the coordinator sent {coordinator} itself: shards failed")
    engine.close()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "emails_per_s": size / elapsed,
        "emails_per_cpu_s": size / cpu,
        "busy_cores": busy / elapsed,
        "emails_per_busy_core_s": size / busy,
        # CPU per email of this process and the worker processes it waited for (w), and
        # of everything else the machine was busy with (p: the database, mostly)
        "w_ms": 1000 * (cpu + children) / size,
        "p_ms": 1000 * max(busy - cpu - children, 0.0) / size,
        "seconds": elapsed,
        "peak_rss_mb": peak_kb / 1024,
        "variants": dict(summary.variants),
        # a sharded run's stages happen in its workers: this process times none of them
        **({} if sharded else {"stages": stages.shares(elapsed)}),
    }


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (every process: workers, PostgreSQL,
    and anything else running; a quiet machine makes it this run's)."""
    with open("/proc/stat") as stat:
        fields = [float(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def sent_by_this_process(engine: Any) -> int:
    """How many rows of the bench run this process (the coordinator) holds or sent."""
    from sqlalchemy import func, select

    from engine.models import LedgerRow

    mine = f"%/{os.getpid()}-%"
    with engine.db.connect() as conn:
        stmt = select(func.count()).where(
            LedgerRow.run_id == "bench",
            LedgerRow.owner.like(mine),  # type: ignore[attr-defined]
        )
        return int(conn.scalar(stmt) or 0)


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """This process's CPU time (or its waited-for children's): a rate per CPU second
    holds on a loaded machine."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


# -- the floor loop -------------------------------------------------------------------------
def floor(size: int, direct: bool = False) -> dict[str, float]:
    """VW predict + Jinja render + ``email.mime`` bytes for ``size`` recipients, nothing else.

    ``direct`` serializes with ``message_bytes`` (what the null backend uses) instead, so
    the table also shows the floor with the run's own serializer.
    """
    import jinja2

    from engine.campaigns import load_campaign
    from engine.mime import message_bytes
    from engine.types import Message
    from plugins.policies.vw import VowpalWabbitPolicy
    from plugins.policies.vw_format import vw_example

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        from engine.scaffold import scaffold_project

        scaffold_project(root, force=True)
        campaign = load_campaign(root / "config" / "campaigns" / f"{CAMPAIGN}.toml")
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(root / "templates"), autoescape=True
        )
        env.globals["item_url"] = lambda item: item["url"]
        variants = campaign.variant_list
        bodies = {v.key: env.get_template(v.template) for v in variants}
        texts = {}
        for v in variants:
            sibling = v.template.rsplit(".", 1)[0] + ".txt"
            if (root / "templates" / sibling).is_file():
                texts[v.key] = env.get_template(sibling)
        subjects = {v.key: env.from_string(v.subject) for v in variants}
        policy = VowpalWabbitPolicy(**campaign.policy.params)
        workspace = policy._live()
        items = [
            {"id": f"i{n:03d}", "title": f"Pick #{n}", "url": f"https://shop.example.com/i/{n}"}
            for n in range(campaign.items_per_email)
        ]
        qp = charset.Charset("utf-8")
        qp.body_encoding = charset.QP
        total = 0
        start, cpu = time.perf_counter(), cpu_seconds()
        for i in range(size):
            rid, email, attributes = person(i)
            context = dict(attributes, email_domain="example.com")
            scores = workspace.predict(vw_example(context, variants))
            key = variants[max(range(len(variants)), key=lambda k: scores[k])].key
            variables = {
                "recipient": {"id": rid, "email": email} | attributes,
                "items": items,
                "campaign": {"name": campaign.name, "description": campaign.description},
                "variant": {"key": key},
                "unsubscribe_url": "https://t.example.com/u/x",
            }
            subject = subjects[key].render(variables)
            text = texts[key].render(variables) if key in texts else ""
            html = bodies[key].render(variables)
            if direct:
                sender = "alerts@example.com"
                message = Message(i, f"<{i}@x.example>", sender, email, subject, html, text)
                total += len(message_bytes(message))
                continue
            mime = MIMEMultipart("alternative")
            mime["From"], mime["To"], mime["Subject"] = "alerts@example.com", email, subject
            mime.attach(MIMEText(text, "plain", qp))  # type: ignore[arg-type]
            mime.attach(MIMEText(html, "html", qp))  # type: ignore[arg-type]
            total += len(mime.as_bytes())
        elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        policy.close()
    return {
        "emails_per_s": size / elapsed,
        "emails_per_cpu_s": size / cpu,
        "seconds": elapsed,
        "bytes": float(total),
    }


def floor_render(root: Path, size: int) -> dict[str, dict[str, float]]:
    """The product's own rendering, nothing else, timed per variant: ``Renderer.render``
    (tracked links, tokens, open pixel, List-Unsubscribe, the text part) and
    ``message_bytes`` for ``size`` recipients of the project, the variants taken in turn
    so a noisy moment slows them alike. Returns each variant's count and seconds (wall
    and CPU); ``render_floor`` weighs them with the variant mix a run sent."""
    from engine.audience.importer import load_items
    from engine.clock import utcnow
    from engine.mime import message_bytes
    from engine.types import Message

    engine = open_engine(root)
    campaign = engine.campaign(CAMPAIGN)
    variants = campaign.variant_list
    catalogue = [{"id": item.item_id} | item.attributes for item in load_items(engine.db)]
    items = catalogue[: campaign.items_per_email]
    spent = {v.key: {"count": 0.0, "seconds": 0.0, "cpu_seconds": 0.0} for v in variants}
    for i in range(1, size + 1):
        rid, email, attributes = person(i)
        variant = variants[i % len(variants)]
        start, cpu = time.perf_counter(), cpu_seconds()
        variables = {
            "recipient": {"id": rid, "email": email} | attributes,
            "items": items,
            "campaign": {"name": campaign.name, "description": campaign.description},
            "variant": {"key": variant.key} | dict(variant.features),
            "now": utcnow(),
        }
        rendered = engine.renderer.render(variant=variant, variables=variables, send_id=i)
        message = Message(
            i,
            f"<{i}@bench.example>",
            engine.settings.from_address,
            email,
            rendered.subject,
            rendered.html,
            rendered.text,
            headers=dict(rendered.headers),
        )
        message_bytes(message)
        figures = spent[variant.key]
        figures["count"] += 1
        figures["seconds"] += time.perf_counter() - start
        figures["cpu_seconds"] += cpu_seconds() - cpu
    engine.close()
    return spent


def render_floor(timings: list[dict[str, dict[str, float]]], mix: dict[str, int]) -> dict[str, Any]:
    """``floor_render``: what rendering alone reaches with a run's variant ``mix``, from
    every timing of each variant (before and after the run): the mix-weighted harmonic
    rate, on wall time and on CPU time, and each variant's own rate."""
    by_variant: dict[str, dict[str, float]] = {}
    for timing in timings:
        for key, spent in timing.items():
            total = by_variant.setdefault(key, {"count": 0.0, "seconds": 0.0, "cpu_seconds": 0.0})
            for name, value in spent.items():
                total[name] += value
    sent = sum(mix.values())

    def rate(seconds: str) -> float:
        per_email = sum(
            count / sent * by_variant[key][seconds] / by_variant[key]["count"]
            for key, count in mix.items()
        )
        return 1 / per_email

    return {
        "emails_per_s": rate("seconds"),
        "emails_per_cpu_s": rate("cpu_seconds"),
        "variants": {
            key: total["count"] / total["seconds"] for key, total in sorted(by_variant.items())
        },
    }


# -- the orchestration ----------------------------------------------------------------------
def child(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run this script as ``--child ...`` in a fresh interpreter; its last line is JSON."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ | (env or {}),
    )
    if done.returncode != 0:
        raise SystemExit(f"bench child {args} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(
    workdir: Path,
    database_url: str,
    size: int,
    backend: str,
    env: dict[str, str] | None = None,
    render: int = 0,
) -> dict[str, Any]:
    """Seed ``size`` recipients in one subprocess, run the campaign in another (``env``:
    settings for the run, ``TAILORMAIL_*`` variables); with ``render``, time the
    rendering alone for ``render`` recipients, half before the run and half after, and
    weigh it with the variant mix the run sent (``floor_render``)."""
    root = workdir / f"{backend}-{size}-{uuid.uuid4().hex[:6]}"
    child("seed", str(root), database_url, backend, str(size))
    half = str(max(render // 2, 3))  # at least one email of each variant
    renders = [child("floor_render", str(root), half)] if render else []
    result = child("run", str(root), database_url, backend, str(size), env=env)
    if render:
        renders.append(child("floor_render", str(root), half))
        result["floor_render"] = render_floor(renders, result["variants"])
    return result


def sharded(processes: int, size: int) -> dict[str, str]:
    """Settings for a run split into 8 shards on a local pool of ``processes``."""
    return {
        "TAILORMAIL_WORKERS__EXECUTOR": "local",
        "TAILORMAIL_WORKERS__PROCESSES": str(processes),
        "TAILORMAIL_WORKERS__SHARD_SIZE": str(max(size // 8, 1)),
    }


def measure_celery(workdir: Path, database_url: str, size: int, workers: int) -> dict[str, float]:
    """The same run on ``workers`` Celery worker processes (``tailormail worker``, Redis)."""
    root = workdir / f"celery-{size}-{uuid.uuid4().hex[:6]}"
    child("seed", str(root), database_url, "null", str(size))
    queue = f"tm-bench-{uuid.uuid4().hex[:8]}"
    env = {
        "TAILORMAIL_WORKERS__EXECUTOR": "celery",
        "TAILORMAIL_WORKERS__SHARD_SIZE": str(max(size // 8, 1)),
        "TAILORMAIL_WORKERS__CELERY__QUEUE": queue,
    }
    command = [sys.executable, "-m", "engine", "worker", "-p", str(root), "--pool", "solo"]
    procs = [
        subprocess.Popen(
            command, env=os.environ | env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(workers)
    ]
    try:
        return child("run", str(root), database_url, "null", str(size), env=env)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def postgres_database() -> tuple[str, Any]:
    """A fresh PostgreSQL database URL and a function that drops it."""
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"tm_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", drop


def sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip() and int(part) > 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sqlite", default="10000,100000,1000000", help="sizes on SQLite")
    parser.add_argument("--postgres", default="100000", help="sizes on PostgreSQL ('' skips)")
    parser.add_argument("--outbox", type=int, default=10000, help="outbox run size (0 skips)")
    parser.add_argument("--floor", type=int, default=20000, help="floor loop recipients")
    parser.add_argument(
        "--workers", type=int, default=100000, help="sharded run size on PostgreSQL (0 skips)"
    )
    parser.add_argument(
        "--worker-counts", type=sizes, default="1,2", help="local pool sizes of the sharded run"
    )
    parser.add_argument("--celery", type=int, default=2, help="Celery workers (0 skips)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, rest = args.child[0], args.child[1:]
        if kind == "floor":
            print(json.dumps(floor(int(rest[0]), direct=rest[1:] == ["direct"])))
        elif kind == "floor_render":
            print(json.dumps(floor_render(Path(rest[0]), int(rest[1]))))
        else:
            root, database_url, backend, size = Path(rest[0]), rest[1], rest[2], int(rest[3])
            if kind == "seed":
                make_project(root, database_url, backend)
                seed(root, size)
                print("{}")
            else:
                print(json.dumps(run(root, size)))
        return
    report(args)


def report(args: argparse.Namespace) -> None:
    from rich.console import Console

    figures: dict[str, Any] = {"load": os.getloadavg()[0]}
    rows: list[tuple[str, str, dict[str, Any]]] = []  # (key, label, figures)
    floor_figures = child("floor", str(args.floor))
    figures["floor"] = floor_figures
    rows.append(("floor", f"floor loop, email.mime ({args.floor:,})", floor_figures))
    direct = child("floor", str(args.floor), "direct")
    figures["floor_direct"] = direct
    rows.append(("floor_direct", f"floor loop, message_bytes ({args.floor:,})", direct))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for size in sizes(args.sqlite):
            url = f"sqlite:///{workdir}/null-{size}.db"
            result = measure(workdir, url, size, "null", render=min(size, args.floor))
            figures.setdefault("sqlite", {})[str(size)] = result
            rows.append((f"sqlite.{size}", f"SQLite, null backend, {size:,}", result))
        for size in sizes(args.postgres):
            url, drop = postgres_database()
            try:
                result = measure(workdir, url, size, "null", render=min(size, args.floor))
            finally:
                drop()
            figures.setdefault("postgres", {})[str(size)] = result
            rows.append((f"postgres.{size}", f"PostgreSQL, null backend, {size:,}", result))
        if args.workers > 0:
            size = args.workers
            for processes in args.worker_counts:
                url, drop = postgres_database()
                try:
                    result = measure(workdir, url, size, "null", sharded(processes, size))
                finally:
                    drop()
                figures.setdefault("workers", {})[str(processes)] = result
                label = f"PostgreSQL, {processes} local worker(s), {size:,}"
                rows.append((f"workers.{processes}", label, result))
            if args.celery > 0:
                url, drop = postgres_database()
                try:
                    result = measure_celery(workdir, url, size, args.celery)
                finally:
                    drop()
                figures.setdefault("celery", {})[str(args.celery)] = result
                label = f"PostgreSQL, {args.celery} Celery workers, {size:,}"
                rows.append((f"celery.{args.celery}", label, result))
        if args.outbox > 0:
            url = f"sqlite:///{workdir}/outbox-{args.outbox}.db"
            result = measure(workdir, url, args.outbox, "outbox")
            figures["outbox"] = {str(args.outbox): result}
            rows.append(
                (f"outbox.{args.outbox}", f"SQLite, outbox backend, {args.outbox:,}", result)
            )
    figures["load_after"] = os.getloadavg()[0]
    console = Console(width=max(Console().width, 160))  # the runs table is wide
    console.print(
        runs_table(
            rows, floor_figures, f"load {figures['load']:.1f} -> {figures['load_after']:.1f}"
        )
    )
    staged = [(key, label, result) for key, label, result in rows if "stages" in result]
    if staged:  # a sharded run's stages happen in its workers
        console.print(stages_table(staged))
    for key, _, result in rows:
        if "floor_render" in result:
            ratio = result["emails_per_s"] / result["floor_render"]["emails_per_s"]
            console.print(f"{key}.of_floor_render {ratio:.3f}", highlight=False)
    for key, _, result in staged:
        for stage, share in result["stages"].items():
            console.print(f"{key}.stages.{stage}.share {share:.3f}", highlight=False)
    workers = figures.get("workers", {})
    if "1" in workers and "2" in workers:
        for line in two_workers(workers["1"], workers["2"]):
            console.print(line, highlight=False)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def two_workers(one: dict[str, Any], two: dict[str, Any]) -> list[str]:
    """Two workers against one, with the ceiling two can reach on this machine.

    With ``w`` CPU seconds per email in the workers and ``p`` in the rest of the machine
    (the database, mostly), two workers on two shared cores send at most ``2 / (w + p)``
    emails a second: ``2 / ((w + p) r1)`` times one worker's rate ``r1``. When one worker
    keeps its core busy (``w r1 = 1``) that is the ``2w / (w + p)`` of the issue; a worker
    that waits on the database leaves more room. ``w`` and ``p`` are the two-worker run's
    own (per email, they differ from one worker's: the database's per-second work, such
    as autovacuum, spreads over more emails).
    """
    w, p = two["w_ms"], two["p_ms"]
    ceiling = 2 / ((w + p) / 1000 * one["emails_per_s"])
    reached = two["emails_per_s"] / one["emails_per_s"]
    return [
        f"workers.1.w_ms {one['w_ms']:.3f}",
        f"workers.1.p_ms {one['p_ms']:.3f}",
        f"workers.2.w_ms {w:.3f}",
        f"workers.2.p_ms {p:.3f}",
        f"workers.2.ceiling {ceiling:.2f}",
        f"workers.2.of_one {reached:.2f}",
        f"workers.2.of_ceiling {reached / ceiling:.2f}",
        "workers.2.per_busy_core_of_one "
        f"{two['emails_per_busy_core_s'] / one['emails_per_busy_core_s']:.2f}",
    ]


def runs_table(
    rows: list[tuple[str, str, dict[str, Any]]], floor: dict[str, Any], load: str
) -> Any:
    """Each run beside the floors: rates, their ratios, busy cores, seconds, peak RSS."""
    from rich.table import Table

    table = Table(title=f"campaign runs vs the floor loops ({load})")
    columns = (
        "run",
        "emails/s",
        "of floor_render",
        "ratio to floor",
        "emails/CPU s",
        "CPU ratio",
        "busy cores",
        "emails/busy core s",
        "seconds",
        "peak RSS MB",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "run" else "right")
    for _, name, result in rows:
        rss = result.get("peak_rss_mb")
        rendered = result.get("floor_render")
        of_render = ""
        if rendered:
            floor_rate = rendered["emails_per_s"]
            of_render = f"{result['emails_per_s'] / floor_rate:.2f} of {floor_rate:,.0f}"
        table.add_row(
            name,
            f"{result['emails_per_s']:,.0f}",
            of_render,
            f"{result['emails_per_s'] / floor['emails_per_s']:.2f}",
            f"{result['emails_per_cpu_s']:,.0f}",
            f"{result['emails_per_cpu_s'] / floor['emails_per_cpu_s']:.2f}",
            f"{result['busy_cores']:.2f}" if "busy_cores" in result else "",
            f"{result['emails_per_busy_core_s']:,.0f}" if "busy_cores" in result else "",
            f"{result['seconds']:.1f}",
            "" if rss is None else f"{rss:,.0f}",
        )
    return table


def stages_table(rows: list[tuple[str, str, dict[str, Any]]]) -> Any:
    """Each stage's share of each run's wall time (``engine.sending.stages``)."""
    from rich.table import Table

    table = Table(title="where each run's time goes (share of its wall time)")
    table.add_column("stage")
    for _, name, _ in rows:
        table.add_column(name, justify="right")
    stages = list(rows[0][2]["stages"]) if rows else []
    for stage in stages:
        table.add_row(stage, *(f"{result['stages'][stage]:.1%}" for _, _, result in rows))
    return table


if __name__ == "__main__":
    main()
