"""Each hook, implemented by a test plugin and observed doing what its docstring says."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from kit.project import ROOT, Project
from sqlmodel import Session, select

from engine import (
    Decision,
    EventType,
    Feedback,
    Interaction,
    Item,
    TrackingEvent,
    Variant,
    hookimpl,
)
from engine.errors import PluginError
from engine.feedback.events import record_event
from engine.models import LedgerRow, LedgerStatus, utcnow
from engine.plugins import describe_plugins, make_plugin_manager
from engine.sending.real_run import run_campaign
from plugins.executors import InlineExecutor


class FirstVariantPolicy:
    """Always the first variant: a deterministic policy for tests."""

    name = "first"
    model_version: str | None = None

    def choose(
        self, context: dict[str, Any], variants: Sequence[Variant], *, seed: int | None = None
    ) -> Decision:
        pmf = {v.key: float(i == 0) for i, v in enumerate(variants)}
        return Decision(variants[0].key, 1.0, pmf, self.name, self.model_version)

    def learn(self, feedback: Iterable[Feedback]) -> None:
        list(feedback)

    def save(self) -> bytes:
        return b"{}"

    def load(self, data: bytes) -> None:
        pass


class ReverseAlphabetRecipe:
    """Items in reverse id order: easy to recognise in a rendered email."""

    def __init__(self, k_max: int = 10) -> None:
        self.items: list[str] = []

    def fit(self, interactions: Iterable[Interaction], items: Iterable[Item] = ()) -> None:
        self.items = sorted((i.item_id for i in items), reverse=True)

    def recommend(self, user_id: str, k: int, exclude: Iterable[str] = ()) -> list[str]:
        return [i for i in self.items if i not in set(exclude)][:k]


class CountingExecutor(InlineExecutor):
    calls = 0

    def map(self, fn, *iterables, **kwargs):  # type: ignore[no-untyped-def]
        CountingExecutor.calls += 1
        return super().map(fn, *iterables)


class Everything:
    """A plugin implementing the per-recipient and observer hooks."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.events: list[TrackingEvent] = []

    @hookimpl
    def register_policies(self, register):  # type: ignore[no-untyped-def]
        register("first", FirstVariantPolicy)

    @hookimpl
    def register_recipes(self, register):  # type: ignore[no-untyped-def]
        register("reverse", ReverseAlphabetRecipe)

    @hookimpl
    def register_executors(self, register):  # type: ignore[no-untyped-def]
        register("counting", CountingExecutor)

    @hookimpl
    def recipient_features(self, engine, campaign, recipient):  # type: ignore[no-untyped-def]
        return {
            "id_length": len(recipient.recipient_id),
            "tier": {"gold": recipient.recipient_id < "u003"},
        }

    @hookimpl
    def extra_template_vars(self, engine, campaign, recipient, variant):  # type: ignore[no-untyped-def]
        return {"greeting": f"Bonjour {recipient.attributes['first_name']} ({variant.key})"}

    @hookimpl
    def eligible(self, engine, campaign, recipient):  # type: ignore[no-untyped-def]
        return "on holiday" if recipient.recipient_id == "u001" else None

    @hookimpl
    def prepare_message(self, engine, campaign, message):  # type: ignore[no-untyped-def]
        message.headers["X-Campaign"] = campaign.name

    @hookimpl
    def message_sent(self, engine, message, result):  # type: ignore[no-untyped-def]
        self.sent.append((message.to_address, result.status.value))

    @hookimpl
    def tracking_event(self, engine, event):  # type: ignore[no-untyped-def]
        self.events.append(event)


def test_per_recipient_and_observer_hooks(sqlite_project: Project) -> None:
    template = sqlite_project.root / "templates" / "t" / "a.html"
    template.write_text(template.read_text().replace("<p>Hi", "<p>{{ greeting }}</p><p>Hi"))
    path = sqlite_project.add_campaign("hooked", policy="first")
    path.write_text(path.read_text().replace('name = "popularity"', 'name = "reverse"'))
    plugin = Everything()
    engine = sqlite_project.engine(plugins=[plugin], executor="counting")
    sqlite_project.seed(engine, people=4, items=5)
    CountingExecutor.calls = 0
    summary = run_campaign(engine, "hooked", run_id="r")
    assert (summary.sent, summary.skipped) == (3, 1)
    assert CountingExecutor.calls >= 1
    with Session(engine.db) as session:
        rows = {r.recipient_id: r for r in session.exec(select(LedgerRow)).all()}
    assert rows["u001"].status == LedgerStatus.SKIPPED and rows["u001"].skip_reason == "on holiday"
    assert rows["u000"].context == {
        "segment": "a",
        "email_provider": "other",
        "id_length": 4,
        "tier": {"gold": True},
    }
    assert rows["u000"].items == ["i4", "i3", "i2"]
    message = next(m for m in engine.memory_outbox if m.to_address == "user0@example.com")
    assert message.headers["X-Campaign"] == "hooked"
    assert "Bonjour Name0 (a)" in message.html
    assert sorted(plugin.sent) == [(f"user{i}@example.com", "sent") for i in (0, 2, 3)]
    record_event(engine, TrackingEvent(EventType.OPEN, rows["u000"].id, utcnow()))
    assert [e.type for e in plugin.events] == [EventType.OPEN]


def test_a_misspelled_hook_implementation_fails_loudly() -> None:
    class Typo:
        @hookimpl
        def recipient_featurs(self, engine, campaign, recipient):  # type: ignore[no-untyped-def]
            return {}

    with pytest.raises(PluginError, match="recipient_featurs"):
        make_plugin_manager([Typo()], load_entry_points=False)


def test_a_name_registered_twice_is_an_error(sqlite_project: Project) -> None:
    class Clash:
        @hookimpl
        def register_policies(self, register):  # type: ignore[no-untyped-def]
            register("vw", FirstVariantPolicy)

    with pytest.raises(PluginError, match="policy 'vw' is registered twice"):
        sqlite_project.engine(plugins=[Clash()])


def test_disabled_plugins_do_not_load() -> None:
    pm = make_plugin_manager(disabled_plugins=["plugins.delivery.smtp"], load_entry_points=False)
    names = [row["name"] for row in describe_plugins(pm)]
    assert "plugins.delivery.smtp" not in names and "plugins.delivery.outbox" in names


def test_plugins_command_lists_plugins_and_their_hooks(sample_project) -> None:  # type: ignore[no-untyped-def]
    result = subprocess.run(
        [sys.executable, "-m", "engine", "plugins", "--project", str(sample_project)],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "plugins.policies.vw" in result.stdout and "register_policies" in result.stdout


commands_seen: list[str] = []


class Commands:
    @staticmethod
    @hookimpl
    def register_commands(register):  # type: ignore[no-untyped-def]
        def hello(name: str = "world") -> None:
            """Say hello (a plugin command)."""
            commands_seen.append(name)

        register("hello", hello)


def test_register_commands_adds_a_cli_command() -> None:
    import typer
    from typer.testing import CliRunner

    from engine.cli.command_group import load_target

    app = typer.Typer()
    app.command("noop")(lambda: None)
    pm = make_plugin_manager([Commands()], load_entry_points=False)
    # the built-in plugins register theirs by path; load_target imports what it names
    pm.hook.register_commands(register=lambda name, target: app.command(name)(load_target(target)))
    result = CliRunner().invoke(app, ["hello", "--name", "plugins"])
    assert result.exit_code == 0, result.output
    assert commands_seen == ["plugins"]


class OverridesDomain:
    @staticmethod
    @hookimpl
    def recipient_features(engine, campaign, recipient):  # type: ignore[no-untyped-def]
        return {"email_provider": "overridden"}


def test_plugin_features_override_the_built_in_ones(sqlite_project: Project) -> None:
    engine = sqlite_project.engine(plugins=[OverridesDomain()])
    sqlite_project.seed(engine, people=1)
    campaign = engine.campaign("alerts")
    context = engine.context_for(campaign, engine.audience(campaign)[0])
    assert context["email_provider"] == "overridden" and context["segment"] == "a"
