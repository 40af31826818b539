"""The trigger API under load: the real ``POST /v1/campaigns/{name}/trigger`` against a bare
Starlette endpoint that parses the same JSON and does one database insert per request.

A throwaway project (SQLite unless ``--database-url``) gets a triggered campaign (two
variants whose templates use the event's data, a VW policy, a popularity recipe), a few
hundred recipients and a catalogue, the ``null`` delivery backend and an API key. Each
server runs under uvicorn in its own process, on a socket this script binds: the API
(``python -m engine.web --api``, with its releaser sending what it accepts) and the bare
app. The same native load generator (``wrk``, Debian's package: a Python client would
share the two cores and flatter the ratio) holds ``--connections`` keep-alive connections
for ``--seconds`` against each, every request a new trigger with its own
``Idempotency-Key``.

Then, in turn:

- ``trigger.accepted``: the triggers the API committed under wrk's load (wrk read the 202
  of ``trigger.answered_202`` of them; the rest were in flight when it stopped, at most one
  per connection); ``trigger.sent``: those sent once the releaser caught up (the null
  backend takes everything: the two must be equal).
- ``trigger.handoff_p99_ms``: at a fixed offered load of half of ``trigger.per_s`` (paced
  requests, for ``--seconds``), the 99th percentile of the time from the decision (just
  before the 202) to the backend's answer (the ledger's ``sent_at``), over those triggers.
- ``trigger.duplicates``: every request is sent again with its key; the rows that exist
  beyond one per accepted trigger (0: replays answer with the first answer).

    python bench/api.py --json api.json
    python bench/api.py --seconds 2 --connections 8       # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from clicks import listening_socket, lua_string, server  # noqa: E402

CAMPAIGN = "pricedrop"
PATH = f"/v1/campaigns/{CAMPAIGN}/trigger"
THREADS = 2  # wrk threads: the machine's two cores are shared with the server
STRIDE = 64  # request numbers interleave across at most this many wrk threads
BODY = (
    '{"recipient": {"id": "u%d"}, "data": {"kind": "drop", "title": "Lamp %d", '
    '"price": "9.99", "url": "https://shop.example.com/lamp"}}'
)
"""One trigger's body: recipient and title from the request's number (Lua's
``string.format`` and Python's ``%`` write it byte for byte alike, so a replay matches)."""
KEY = re.compile(r"^b-(\d+)$")
SETTINGS = """database_url = "%(url)s"
from_address = "alerts@example.com"
[delivery]
backend = "null"
[api]
rate_limit_per_second = 1e9
rate_limit_burst = 1000000000
[web]
max_connections_per_client = 4096
"""
TRIGGERED = """name = "pricedrop"
items_per_email = 3
[trigger]
context = ["kind"]
link_hosts = ["shop.example.com"]
[recipe]
name = "popularity"
[policy]
name = "vw"
[[variants]]
key = "short"
subject = "{{ event.title }} is cheaper"
template = "drop_short.html"
[[variants]]
key = "long"
subject = "Down to {{ event.price }}: {{ event.title }}"
template = "drop_long.html"
"""
TEMPLATE = """<html><body><p>Hi {{ recipient.first_name }}, {{ event.title }} now costs
{{ event.price }}.</p><a href="{{ track_url(event.url) }}">See it</a>
{%% for item in items %%}<a href="{{ item_url(item) }}">{{ item.title }}</a>{%% endfor %%}
<p>%s</p></body></html>
"""


# -- the project -----------------------------------------------------------------------------
def make_project(root: Path, database_url: str, people: int) -> str:
    """Write and seed the project; returns an API key with the trigger scope."""
    from engine.api_keys import create_key
    from engine.app import Engine
    from engine.audience.importer import import_file

    (root / "config" / "campaigns").mkdir(parents=True)
    (root / "templates").mkdir()
    (root / "config" / "tailormail.toml").write_text(SETTINGS % {"url": database_url})
    (root / "config" / "campaigns" / "pricedrop.toml").write_text(TRIGGERED)
    for key in ("short", "long"):
        (root / "templates" / f"drop_{key}.html").write_text(TEMPLATE % key)
    lines = ["id,email,first_name"] + [f"u{i},u{i}@example.com,Name{i}" for i in range(people)]
    (root / "people.csv").write_text("\n".join(lines) + "\n")
    items = ["id,title,url"] + [f"i{i},Item {i},https://shop.example.com/i/{i}" for i in range(40)]
    (root / "items.csv").write_text("\n".join(items) + "\n")
    with Engine(project_dir=root, load_entry_points=False) as engine:
        import_file(engine.db, "recipients", root / "people.csv")
        import_file(engine.db, "items", root / "items.csv")
        _, key = create_key(engine.db, "bench", ["trigger", "read"])
    return key


def _query(root: Path, sql: str) -> list[tuple[Any, ...]]:
    from sqlalchemy import text

    from engine.app import Engine

    with Engine(project_dir=root, load_entry_points=False) as engine, engine.db.connect() as conn:
        return [tuple(row) for row in conn.execute(text(sql)).all()]


def wait_until_sent(root: Path, timeout: float = 300.0) -> None:
    """Until no trigger waits (scheduled, pending, deferred)."""
    deadline = time.monotonic() + timeout
    waiting = "SELECT count(*) FROM ledger WHERE status IN ('scheduled', 'pending', 'deferred')"
    while _query(root, waiting)[0][0]:
        if time.monotonic() > deadline:
            raise SystemExit("triggers still waiting to be sent after the load")
        time.sleep(0.5)


# -- the servers -----------------------------------------------------------------------------
def bare_app(database_url: str) -> Any:
    """A Starlette app that parses the body as JSON and inserts it as one row."""
    from sqlalchemy import JSON, Column, Integer, MetaData, Table, create_engine
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    db = create_engine(database_url, pool_size=20, max_overflow=0)
    table = Table("bare", MetaData(), Column("id", Integer, primary_key=True), Column("body", JSON))
    table.create(db, checkfirst=True)

    def insert(body: Any) -> int:
        with db.begin() as conn:
            return int(conn.execute(table.insert().values(body=body)).inserted_primary_key[0])

    async def accept(request: Request) -> Response:
        body = json.loads(await request.body())
        row = await run_in_threadpool(insert, body)
        return JSONResponse({"id": row}, status_code=202)

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [Route(PATH, accept, methods=["POST"]), Route("/health", health)]
    return Starlette(routes=routes)


def serve_bare(fd: int, database_url: str) -> None:
    """Serve ``bare_app`` on the inherited listening socket ``fd`` until interrupted."""
    import socket

    import uvicorn

    config = uvicorn.Config(bare_app(database_url), log_level="warning", lifespan="on")
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


# -- the load --------------------------------------------------------------------------------
WRK_SCRIPT = """
local threads, next_id = {}, 0
wrk.method = "POST"
wrk.headers["Authorization"] = %(auth)s
wrk.headers["Content-Type"] = "application/json"

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  i, accepted, fivexx, other = 0, 0, 0, 0
end

function request()
  i = i + 1
  local n = i * %(stride)d + id
  wrk.headers["Idempotency-Key"] = "b-" .. n
  return wrk.format(nil, %(path)s, nil, string.format(%(body)s, n %% %(people)d, n))
end

function response(status, headers, body)
  if status == 202 then accepted = accepted + 1
  elseif status >= 500 then fivexx = fivexx + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local a, f, o = 0, 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("accepted"); f = f + t:get("fivexx"); o = o + t:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    '{"accepted": %%d, "5xx": %%d, "other": %%d, "broken": %%d, "seconds": %%f, ' ..
    '"p50_ms": %%f, "p99_ms": %%f}\\n',
    a, f, o, e.connect + e.read + e.write + e.timeout, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def load(port: int, key: str, people: int, seconds: float, connections: int) -> dict[str, Any]:
    """wrk against ``port`` for ``seconds`` over ``connections`` connections."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("bench/api.py needs wrk, a native load generator: apt-get install wrk")
    script = WRK_SCRIPT % {
        "auth": lua_string(f"Bearer {key}"),
        "path": lua_string(PATH),
        "body": lua_string(BODY),
        "people": people,
        "stride": STRIDE,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        command = [wrk, "-t", str(min(THREADS, connections)), "-c", str(connections)]
        command += ["-d", f"{seconds:g}s", "--timeout", "10s", "-s", handle.name]
        done = subprocess.run(
            [*command, f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"wrk failed:\n{done.stderr or done.stdout}")
        figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        os.unlink(handle.name)
    return figures | {"per_s": figures["accepted"] / figures["seconds"]}


def _poster(url: str, key: str, people: int) -> Any:
    """``post(n, idempotency_key)``: request number ``n``'s body with that key, from a
    client per thread; returns the answer."""
    import httpx

    local = threading.local()

    def post(n: int, idempotency_key: str) -> Any:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=url, timeout=30, trust_env=False)
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key}
        return client.post(PATH, content=BODY % (n % people, n), headers=headers)

    return post


def paced(url: str, key: str, people: int, rate: float, seconds: float, start: int) -> int:
    """``rate`` triggers a second for ``seconds`` (open loop: each sent on its schedule,
    whatever the previous answers took); returns how many were accepted."""
    post = _poster(url, key, people)
    answers: list[int] = []

    def one(n: int) -> None:
        answers.append(post(n, f"p-{n}").status_code)

    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=32) as pool:
        for number in range(max(1, int(rate * seconds))):
            delay = began + number / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, start + number)
    return answers.count(202)


def replay(url: str, key: str, people: int, keys: list[str]) -> int:
    """Send every wrk request again with its key; returns the answers that were not a
    replay of the first (they should all be)."""
    post = _poster(url, key, people)

    def one(idempotency_key: str) -> bool:
        match = KEY.match(idempotency_key)
        assert match is not None
        answer = post(int(match.group(1)), idempotency_key)
        return bool(answer.headers.get("Idempotent-Replayed") != "true")

    with ThreadPoolExecutor(max_workers=16) as pool:
        return sum(pool.map(one, keys))


# -- the run ---------------------------------------------------------------------------------
def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Both servers under the same load, then the half-load hand-off and the replay."""
    root = workdir / "project"
    database_url = args.database_url or f"sqlite:///{workdir}/tailormail.db"
    key = make_project(root, database_url, args.people)
    with listening_socket() as sock:
        command = [sys.executable, __file__, "--serve-bare", str(sock.fileno()), database_url]
        with server(command, sock):
            bare = load(sock.getsockname()[1], key, args.people, args.seconds, args.connections)
    with listening_socket() as sock:
        port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "engine.web", "--api", "-p", str(root)]
        with server([*command, "--fd", str(sock.fileno())], sock):
            trigger = load(port, key, args.people, args.seconds, args.connections)
            wait_until_sent(root)
            half = max(trigger["per_s"] / 2, 1.0)
            since = _query(root, "SELECT coalesce(max(id), 0) FROM ledger")[0][0]
            paced_accepted = paced(url, key, args.people, half, args.seconds, 10**9)
            wait_until_sent(root)
            rows = _query(
                root,
                f"SELECT created_at, sent_at FROM ledger WHERE id > {since} AND status = 'sent'",
            )
            handoff = sorted(_ms(sent) - _ms(created) for created, sent in rows)
            before = _query(root, "SELECT count(*) FROM ledger WHERE trigger_id <> ''")[0][0]
            keys = [k for (k,) in _query(root, "SELECT key FROM idempotency_keys") if KEY.match(k)]
            fresh = replay(url, key, args.people, keys)
            wait_until_sent(root)
    after = _query(root, "SELECT count(*) FROM ledger WHERE trigger_id <> ''")[0][0]
    phase = f"FROM ledger WHERE trigger_id <> '' AND id <= {since}"
    committed = _query(root, f"SELECT count(*) {phase}")[0][0]
    sent = _query(root, f"SELECT count(*) {phase} AND status = 'sent'")[0][0]
    return {
        "trigger.per_s": trigger["per_s"],
        "trigger.bare_per_s": bare["per_s"],
        "trigger.ratio_to_bare": trigger["per_s"] / bare["per_s"] if bare["per_s"] else 0.0,
        "trigger.accepted": committed,
        "trigger.sent": sent,
        "trigger.answered_202": trigger["accepted"],
        "trigger.handoff_p50_ms": statistics.median(handoff) if handoff else None,
        "trigger.handoff_p99_ms": _percentile(handoff, 0.99),
        "trigger.half_load_per_s": half,
        "trigger.half_load_accepted": paced_accepted,
        "trigger.duplicates": after - before,
        "trigger.replays_not_replayed": fresh,
        "trigger.replayed": len(keys),
        "trigger.errors_5xx": trigger["5xx"],
        "trigger.p50_ms": trigger["p50_ms"],
        "trigger.p99_ms": trigger["p99_ms"],
        "bare": bare,
        "trigger": trigger,
        "connections": args.connections,
        "seconds": args.seconds,
        "database": database_url.split(":", 1)[0],
    }


def _ms(value: Any) -> float:
    from datetime import datetime

    stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return stamp.timestamp() * 1000


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]


def print_table(figures: dict[str, Any]) -> None:
    """The two servers side by side, then the hand-off and the replay."""
    table = Table(
        title=f"trigger API, {figures['connections']} connections, {figures['seconds']:g} s each"
        f" ({figures['database']})"
    )
    for column in ("server", "requests/s", "p50 ms", "p99 ms", "202", "5xx", "other", "broken"):
        table.add_column(column, justify="left" if column == "server" else "right")
    for name, row in (("bare insert", figures["bare"]), ("trigger API", figures["trigger"])):
        table.add_row(
            name,
            f"{row['per_s']:,.0f}",
            f"{row['p50_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
            str(row["accepted"]),
            str(row["5xx"]),
            str(row["other"]),
            str(row["broken"]),
        )
    console = Console()
    console.print(table)
    p99 = figures["trigger.handoff_p99_ms"]
    console.print(
        f"ratio_to_bare {figures['trigger.ratio_to_bare']:.2f}  "
        f"accepted {figures['trigger.accepted']}  sent {figures['trigger.sent']}  "
        f"hand-off p99 {p99 if p99 is None else round(p99)} ms at "
        f"{figures['trigger.half_load_per_s']:.0f}/s  "
        f"duplicates {figures['trigger.duplicates']} after {figures['trigger.replayed']} replays"
    )


def main() -> None:
    """Parse the command line: measure (default), or serve the bare app (a child)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="load per server")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections")
    parser.add_argument("--people", type=int, default=500, help="recipients triggered for")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--serve-bare", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare is not None:
        serve_bare(int(args.serve_bare[0]), args.serve_bare[1])
        return
    if args.seconds <= 0 or args.connections < 1 or args.people < 1:
        parser.error("--seconds, --connections and --people must be positive")
    with tempfile.TemporaryDirectory(prefix="tm-bench-api-") as workdir:
        figures = measure(args, Path(workdir))
    print_table(figures)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
