"""One way to make a command: built-in and plugin commands register through
``register_commands``, share the console and the project, and load only when run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.core import TyperGroup
from typer.testing import CliRunner

from engine import hookimpl
from engine.cli import builtin, command_group
from engine.cli.command_group import collect_commands, make_command
from engine.cli.commands import app
from engine.cli.support import NotInProjectError, resolve_project
from engine.errors import TailormailWarning

ROOT = Path(__file__).resolve().parents[2]


def tailormail(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TAILORMAIL_PROJECT"}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env | {"COLUMNS": "200", "PYTHONPATH": str(ROOT)},
        timeout=300,
        check=False,
    )


def test_built_in_and_plugin_commands_register_through_the_same_hook() -> None:
    commands = collect_commands()
    names = list(commands)
    assert names[: len(builtin.BUILTIN_COMMANDS)] == [n for n, _ in builtin.BUILTIN_COMMANDS]
    for plugin_command in ("recommend", "similar", "evaluate-recipe", "outbox", "worker"):
        assert isinstance(commands[plugin_command], str)  # a path: imported when it runs


@pytest.mark.parametrize("command", [["recommend", "u1"], ["outbox"], ["worker"]])
def test_a_plugin_command_outside_a_project_exits_2_and_creates_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    done = tailormail(*command, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "error: not in a tailormail project" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_project_given_before_a_plugin_command_travels_on_the_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TAILORMAIL_PROJECT", raising=False)
    nowhere = tmp_path / "nowhere"
    result = CliRunner().invoke(app, ["--project", str(nowhere), "recommend", "u1"])
    assert isinstance(result.exception, NotInProjectError)
    assert f"--project {nowhere}: no such directory" in str(result.exception)
    # nothing of that invocation is left behind for the next command
    with pytest.raises(NotInProjectError, match="not in a tailormail project"):
        resolve_project()


def modules_after(
    args: list[str], cwd: Path, prefixes: tuple[str, ...] = ("engine", "plugins")
) -> tuple[str, list[str]]:
    """``tailormail ARGS`` in a fresh interpreter (it must succeed): what it printed, and
    the modules it loaded whose names start with ``prefixes`` (the engine's and plugins')."""
    code = (
        "import json, sys\n"
        f"sys.argv = ['tailormail', *{args!r}]\n"
        "from engine.cli.commands import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({prefixes!r}))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    *printed, loaded = done.stdout.splitlines()
    return "\n".join(printed), json.loads(loaded)


def test_version_answers_before_any_command_module_or_plugin_loads() -> None:
    printed, loaded = modules_after(["--version"], ROOT)
    assert printed.startswith("tailormail ")
    assert not [m for m in loaded if m.startswith("plugins")]
    assert "engine.settings" not in loaded and "engine.app" not in loaded
    assert "engine.cli.privacy" not in loaded and "engine.cli.learning" not in loaded


def test_a_registered_path_becomes_its_command_or_group() -> None:
    command = make_command("outbox", "plugins.delivery.outbox_cli:outbox", rich_markup_mode=None)
    assert command.name == "outbox" and "outbox" in (command.help or "")
    group = make_command("secret", "engine.cli.secret:secret_app", rich_markup_mode=None)
    assert group.name == "secret" and isinstance(group, TyperGroup)
    assert sorted(group.list_commands(None)) == ["rotate", "status"]  # type: ignore[arg-type]


def test_a_plugin_cannot_replace_a_built_in_command(monkeypatch: pytest.MonkeyPatch) -> None:
    class Impostor:
        @hookimpl
        def register_commands(self, register):  # type: ignore[no-untyped-def]
            register("send", "evil.module:send")
            register("hello", "friendly.module:hello")

    real = command_group.make_plugin_manager
    monkeypatch.setattr(
        command_group, "make_plugin_manager", lambda plugins: real([*plugins, Impostor()])
    )
    with pytest.warns(TailormailWarning, match="'send', which is built in"):
        commands = collect_commands()
    assert commands["send"] == dict(builtin.BUILTIN_COMMANDS)["send"]
    assert commands["hello"] == "friendly.module:hello"


def test_a_built_in_command_runs_without_loading_a_plugin(sample_dir: Path) -> None:
    _, loaded = modules_after(["runs"], sample_dir)
    assert [m for m in loaded if m.startswith("plugins")] == []


def test_runs_reads_a_migrated_database_without_the_orm(sample_dir: Path) -> None:
    tailormail("runs", cwd=sample_dir)  # the first command creates and migrates the database
    printed, loaded = modules_after(
        ["runs"], sample_dir, ("engine", "sqlmodel", "sqlalchemy", "alembic")
    )
    assert printed == "no runs yet"
    assert [m for m in loaded if m.split(".")[0] in ("sqlmodel", "alembic")] == []
    assert "engine.models" not in loaded and "sqlalchemy.orm" not in loaded


@pytest.fixture
def sample_dir(tmp_path: Path) -> Path:
    done = tailormail("init", "shop", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return tmp_path / "shop"


def test_runs_refuses_a_limit_below_one(sample_dir: Path) -> None:
    done = tailormail("runs", "--limit", "0", cwd=sample_dir)
    assert done.returncode == 2 and "Invalid value for '--limit'" in done.stderr
