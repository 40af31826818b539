"""Shared fixtures: databases on SQLite and PostgreSQL, and throwaway tailormail projects
(``kit.project.Project``; the kits tests import live in the ``kit`` package).

Each PostgreSQL test gets a database of its own, created and dropped here, so runs never
see each other's data. In CI (``CI`` set) a PostgreSQL that does not answer fails the run;
elsewhere those tests skip with a message saying how to run them.

``postgres_url`` is the one way a test reaches PostgreSQL (``TAILORMAIL_TEST_POSTGRES_URL``
names the server), and every test that takes it, directly or through ``db_url``, carries
the ``postgres`` marker, so ``pytest -m postgres`` selects them all.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kit.project import ROOT, Project
from sqlalchemy import create_engine, text

from engine.ledger.lease import LeaseKeeper

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
