"""Shared fixtures: databases on SQLite and PostgreSQL, and throwaway tailormail projects.

Each PostgreSQL test gets a database of its own, created and dropped here, so runs never
see each other's data. In CI (``CI`` set) a PostgreSQL that does not answer fails the run;
elsewhere those tests skip with a message saying how to run them.

``postgres_url`` is the one way a test reaches PostgreSQL (``TAILORMAIL_TEST_POSTGRES_URL``
names the server), and every test that takes it, directly or through ``db_url``, carries
the ``postgres`` marker, so ``pytest -m postgres`` selects them all.
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from engine.app import Engine
from engine.ledger.lease import LeaseKeeper
from engine.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET = "test-secret-0123456789-0123456789-01"  # what Project engines sign with
PG_ADMIN_URL = os.environ.get(
    "TAILORMAIL_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def _pg_admin() -> Any:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        admin.dispose()
        message = f"PostgreSQL not reachable at {PG_ADMIN_URL} ({type(exc).__name__})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI requires it")
        pytest.skip(f"{message}; start PostgreSQL on 127.0.0.1:5432 to run these tests")
    return admin


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that asks for ``postgres_url`` (``db_url`` marks its own param)."""
    for item in items:
        if "postgres_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    if request.node.get_closest_marker("postgres") is None:  # or -m postgres would miss it
        pytest.fail(
            f"{request.node.nodeid} reaches PostgreSQL without the postgres marker: take the "
            "database from the db_url or postgres_url fixture, or mark the param"
        )
    admin = _pg_admin()
    name = f"tm_test_{uuid.uuid4().hex[:16]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL on each backend: SQLite in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tailormail.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


CAMPAIGN = """
name = "{name}"
description = "Test alerts"
schedule = "0 9 * * *"
items_per_email = 3
{extra}

[recipe]
name = "popularity"

[policy]
name = "{policy}"

[reward]
attribution_window = "1h"

[[variants]]
key = "a"
subject = "Hello {{{{ recipient.first_name }}}}"
template = "t/a.html"
features = {{ layout = "plain" }}

[[variants]]
key = "b"
subject = "Picks for {{{{ recipient.first_name }}}}"
template = "t/b.html"
features = {{ layout = "cards" }}
"""

TEMPLATE = """<html><body data-layout="{key}">
<p>Hi {{{{ recipient.first_name }}}}</p>
<ul>{{% for item in items %}}<li><a href="{{{{ track_url(item.url) }}}}">{{{{ item.title }}}}</a>
</li>{{% endfor %}}</ul>
<a href="https://example.com/about?a=1&amp;b=2">About</a>
<a href="{{{{ unsubscribe_url }}}}">Unsubscribe</a>
</body></html>
"""


def toml_text(table: dict[str, Any], prefix: str = "") -> str:
    """``table`` as TOML (strings, numbers, booleans, lists of them, nested tables)."""
    lines, tables = [], []
    for key, value in table.items():
        if isinstance(value, dict):
            tables.append(toml_text(value, f"{prefix}{key}."))
        else:
            lines.append(f"{key} = {json.dumps(value)}")  # JSON scalars are TOML's
    header = [f"[{prefix.rstrip('.')}]"] if prefix and lines else []
    return "\n".join([*header, *lines, ""]) + "".join(tables)


class Project:
    """A throwaway tailormail project on disk, with helpers to build engines for it."""

    def __init__(self, root: Path, db_url: str) -> None:
        self.root = root
        self.db_url = db_url
        (root / "config" / "campaigns").mkdir(parents=True)
        (root / "templates" / "t").mkdir(parents=True)
        for key in ("a", "b"):
            (root / "templates" / "t" / f"{key}.html").write_text(TEMPLATE.format(key=key))
        self.add_campaign("alerts")

    def add_campaign(self, name: str, policy: str = "uniform", extra: str = "") -> Path:
        """Write ``config/campaigns/<name>.toml``."""
        path = self.root / "config" / "campaigns" / f"{name}.toml"
        path.write_text(CAMPAIGN.format(name=name, policy=policy, extra=textwrap.dedent(extra)))
        return path

    def engine(self, backend: str = "memory", **overrides: Any) -> Engine:
        """An Engine for this project (entry points off: the suite controls its plugins)."""
        plugins = overrides.pop("plugins", ())
        delivery = {"backend": backend} | overrides.pop("delivery", {})
        settings = load_settings(
            project_dir=self.root,
            environ={"TAILORMAIL_SECRET": TEST_SECRET},
            overrides={"database_url": self.db_url, "delivery": delivery} | overrides,
        )
        return Engine(settings=settings, plugins=plugins, load_entry_points=False)

    def configure(self, backend: str = "memory", **settings: Any) -> Engine:
        """Write ``settings`` (and this project's database and ``backend``) to
        ``config/tailormail.toml`` and return the project's engine, as a command would open
        it: shard workers build their engines from the project, never from a coordinator's
        overrides (entry points off, as ``engine()``)."""
        delivery = {"backend": backend} | settings.pop("delivery", {})
        table = {"database_url": self.db_url, "delivery": delivery} | settings
        (self.root / "config" / "tailormail.toml").write_text(toml_text(table))
        return Engine(project_dir=self.root, load_entry_points=False)

    def write_people(self, n: int = 20) -> Path:
        """A recipients CSV with ``n`` people."""
        path = self.root / "people.csv"
        lines = ["id,email,first_name,segment"]
        lines += [f"u{i:03d},user{i}@example.com,Name{i},{'ab'[i % 2]}" for i in range(n)]
        path.write_text("\n".join(lines) + "\n")
        return path

    def write_items(self, n: int = 6) -> Path:
        """An items CSV with ``n`` items."""
        path = self.root / "items.csv"
        lines = ["id,title,url,category"]
        lines += [f"i{i},Item {i},https://shop.example.com/i/{i},c{i % 2}" for i in range(n)]
        path.write_text("\n".join(lines) + "\n")
        return path

    @contextmanager
    def sent_through_a_server(self, people: int = 3) -> Iterator[tuple[Engine, str]]:
        """Serve tracking on loopback and send ``alerts`` (run ``r1``) with links to it.

        Yields the sending engine (its ``memory_outbox`` holds the emails) and the base URL.
        """
        from engine.sending.pipeline import run_campaign
        from engine.web import BackgroundServer

        with BackgroundServer(self.engine()) as server:
            engine = self.engine(tracking_base_url=server.url)
            self.seed(engine, people=people)
            run_campaign(engine, "alerts", run_id="r1")
            yield engine, server.url

    def seed(self, engine: Engine, people: int = 20, items: int = 6) -> None:
        """Import people and items into ``engine``'s database."""
        from engine.audience.importer import import_file

        import_file(engine.db, "recipients", self.write_people(people))
        import_file(engine.db, "items", self.write_items(items))


@pytest.fixture(autouse=True)
def _stop_lease_keepers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Stop every ledger lease keeper a test started and left running (a test that ends
    on an exception may leave one): its thread would otherwise renew leases during later
    tests, and under mutmut race its stats collection ("Set changed size")."""
    started: list[LeaseKeeper] = []
    start = LeaseKeeper.start

    def recording_start(keeper: LeaseKeeper) -> None:
        started.append(keeper)
        start(keeper)

    monkeypatch.setattr(LeaseKeeper, "start", recording_start)
    yield
    for keeper in started:
        keeper.stop()


@pytest.fixture
def project(tmp_path: Path, db_url: str) -> Project:
    """A project on each database backend."""
    return Project(tmp_path / "project", db_url)


@pytest.fixture
def sqlite_project(tmp_path: Path) -> Project:
    """A project on SQLite only (for tests that are not about storage)."""
    return Project(tmp_path / "project", f"sqlite:///{tmp_path}/tailormail.db")


@pytest.fixture
def sample_project(tmp_path: Path) -> Path:
    """A copy of the repository's sample project (config/ and templates/)."""
    target = tmp_path / "sample"
    shutil.copytree(ROOT / "config", target / "config")
    shutil.copytree(ROOT / "templates", target / "templates")
    return target


def stop_processes(procs: list[Any]) -> None:
    """SIGTERM every process still running, wait for each, SIGKILL any that hangs."""
    import signal
    import subprocess

    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
