"""Throwaway tailormail projects for tests: ``Project`` writes one (config, campaigns,
templates, people, items) and opens its engines; ``stop_processes`` ends a test's children.

The ``project``, ``sqlite_project`` and ``sample_project`` fixtures (``conftest.py``) build
on it.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.app import Engine
from engine.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
TEST_SECRET = "test-secret-0123456789-0123456789-01"  # what Project engines sign with


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
        from engine.sending.real_run import run_campaign
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
