"""Every mistake gets a clear answer: the CLI run as a user runs it, in a subprocess.

Each test asserts the exit status, the message a user reads, and that no traceback is
printed (issue 5).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def tailormail(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``tailormail ARGS`` in ``cwd``; fails the test if it printed a traceback."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TAILORMAIL_")}
    done = subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=cwd,
        env=clean | {"COLUMNS": "200"} | (env or {}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done


def fails(done: subprocess.CompletedProcess[str], *phrases: str) -> str:
    """Assert exit status 2 with one ``error:`` line naming every phrase; return it."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    message = " ".join(done.stderr.split())  # rich wraps long lines
    assert message.startswith("error: "), done.stderr
    for phrase in phrases:
        assert phrase in message, (phrase, message)
    return message


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    """A project made by ``tailormail init``."""
    done = tailormail("init", "shop", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return tmp_path / "shop"


# -- item 2: --version, --project before or after the subcommand, TAILORMAIL_PROJECT ------
def test_version_prints_the_distribution_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    done = tailormail("--version", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == f"tailormail {version('tailormail')}"


def test_project_option_works_before_and_after_the_subcommand(sample: Path, tmp_path: Path) -> None:
    for args in (
        ("-p", "shop", "import", "recipients", "shop/people.csv"),
        ("import", "recipients", "shop/people.csv", "--project", "shop"),
        ("--project", "shop", "report", "weekly-picks"),
    ):
        done = tailormail(*args, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stderr)
    done = tailormail("report", "weekly-picks", cwd=tmp_path, env={"TAILORMAIL_PROJECT": "shop"})
    assert done.returncode == 0, done.stderr


def test_a_project_option_naming_no_project_says_so(sample: Path, tmp_path: Path) -> None:
    fails(tailormail("-p", "nowhere", "report", "x", cwd=tmp_path), "--project nowhere")
    fails(
        tailormail("report", "x", cwd=tmp_path, env={"TAILORMAIL_PROJECT": str(tmp_path)}),
        "TAILORMAIL_PROJECT",
        "is not a tailormail project",
        "tailormail init",
    )


# -- item 3: outside a project, say so and create nothing ------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ("send", "weekly-picks"),
        ("report", "weekly-picks"),
        ("rewards",),
        ("export", "weekly-picks"),
        ("outbox",),
        ("import", "recipients", "people.csv"),
    ],
)
def test_outside_a_project_commands_say_so_and_create_nothing(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    (tmp_path / "people.csv").write_text("id,email\nu1,a@example.com\n")
    fails(
        tailormail(*args, cwd=tmp_path),
        "not in a tailormail project",
        str(tmp_path),
        "tailormail init",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["people.csv"]


def test_commands_that_need_no_project_work_outside_one(tmp_path: Path) -> None:
    assert tailormail("--help", cwd=tmp_path).returncode == 0
    done = tailormail("plugins", cwd=tmp_path)
    assert done.returncode == 0 and "plugins.policies.vw" in done.stdout
    assert list(tmp_path.iterdir()) == []
