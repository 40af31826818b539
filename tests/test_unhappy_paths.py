"""Every mistake gets a clear answer: the CLI run as a user runs it, in a subprocess.

Each test asserts the exit status, the message a user reads, and that no traceback is
printed (issue 5).
"""

from __future__ import annotations

import os
import re
import socket
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


def imported(project: Path, *kinds: str) -> Path:
    """``project`` with the sample files of ``kinds`` imported."""
    files = {"recipients": "people.csv", "items": "items.csv", "interactions": "interactions.csv"}
    for kind in kinds:
        done = tailormail("import", kind, files[kind], cwd=project)
        assert done.returncode == 0, done.stderr
    return project


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- item 1: the init hint works as printed; no catalogue stops before sending ----------
def test_the_init_hint_works_exactly_as_printed(tmp_path: Path) -> None:
    done = tailormail("init", "my shop", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    hint = done.stdout.split("Next:", 1)[1].strip()
    assert "tailormail send weekly-picks" in hint
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TAILORMAIL_")}
    ran = subprocess.run(
        ["bash", "-e", "-c", hint],
        cwd=tmp_path,
        env=clean | {"PATH": path, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr
    assert len(list((tmp_path / "my shop" / "outbox").glob("*.eml"))) == 40


def test_a_campaign_without_a_catalogue_stops_before_sending(sample: Path) -> None:
    imported(sample, "recipients")
    message = fails(
        tailormail("send", "weekly-picks", cwd=sample),
        "campaign 'weekly-picks'",
        "no catalogue",
        "tailormail import items",
    )
    assert "items[0]" not in message
    assert not (sample / "outbox").exists()


# -- item 5: a send starts a new run; --run resumes only an existing one -----------------
def test_send_starts_a_new_run_each_time_and_resumes_only_known_runs(sample: Path) -> None:
    imported(sample, "recipients", "items")
    first = tailormail("send", "weekly-picks", cwd=sample)
    second = tailormail("send", "weekly-picks", cwd=sample)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    ids = [re.search(r"run (weekly-picks@manual-\S+)", d.stdout) for d in (first, second)]
    assert ids[0] and ids[1] and ids[0].group(1) != ids[1].group(1)

    fails(
        tailormail("send", "weekly-picks", "--run", "weekly-pics-1", cwd=sample),
        "no run 'weekly-pics-1' to resume",
        ids[0].group(1),
        ids[1].group(1),
        "--new-run weekly-pics-1",
    )
    resumed = tailormail("send", "weekly-picks", "--run", ids[0].group(1), cwd=sample)
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(r"│\s+40\s+│\s+40\s+│\s+0\s+│\s+0\s+│\s+0\s+│", resumed.stdout)

    assert tailormail("send", "weekly-picks", "--new-run", "mine", cwd=sample).returncode == 0
    fails(
        tailormail("send", "weekly-picks", "--new-run", "mine", cwd=sample),
        "run 'mine' already exists",
        "--run mine",
    )
    fails(tailormail("send", "weekly-pics", cwd=sample), "unknown campaign 'weekly-pics'")


def test_manual_run_ids_are_unique_within_a_second_and_unlike_tick_ids() -> None:
    from datetime import UTC, datetime

    from engine.pipeline import run_id_for
    from engine.runs import manual_run_id

    moment = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    ids = {manual_run_id("weekly", moment) for _ in range(1000)}
    assert len(ids) == 1000
    assert run_id_for("weekly", moment) not in ids


# -- items 6 and 7: runs are listed; a failed run says why; a summary explains itself ---
def test_a_run_that_delivers_nothing_exits_non_zero_and_runs_lists_it(sample: Path) -> None:
    imported(sample, "recipients", "items")
    env = {
        "TAILORMAIL_DELIVERY__BACKEND": "smtp",
        "TAILORMAIL_DELIVERY__SMTP__PORT": str(closed_port()),
        "TAILORMAIL_DELIVERY__SMTP__TIMEOUT": "2",
    }
    done = tailormail("send", "weekly-picks", cwd=sample, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "nothing could be delivered (40 deferred, 0 failed, 0 unknown)" in done.stderr
    out = " ".join(done.stdout.split())
    sample_of_three = r"\(\S+@example\.com, \S+, \S+, \.\.\.\)"
    assert re.search(r"deferred 40: .*Connection refused.* " + sample_of_three, out), out

    listed = tailormail("runs", "weekly-picks", cwd=sample)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "weekly-picks@manual-" in line)
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[1:8] == ["finished", "0", "0", "40", "0", "0", "0"]


def test_a_run_stopped_by_an_error_is_marked_failed_with_the_reason(sample: Path) -> None:
    imported(sample, "recipients")
    fails(tailormail("send", "weekly-picks", cwd=sample), "no catalogue")
    listed = tailormail("runs", cwd=sample)
    assert listed.returncode == 0, listed.stderr
    text = " ".join(listed.stdout.split())
    assert "failed" in text and "no catalogue to draw from" in text
    assert "running" not in text


def test_skipped_recipients_are_grouped_by_reason(sample: Path) -> None:
    imported(sample, "recipients", "items")
    first = tailormail("send", "weekly-picks", cwd=sample)
    assert first.returncode == 0, first.stderr
    again = tailormail("send", "weekly-picks", cwd=sample)
    assert again.returncode == 0, again.stderr  # nothing attempted: not a failure
    out = " ".join(again.stdout.split())
    assert re.search(r"skipped 40: frequency cap \(.*@example\.com, .*, \.\.\.\)", out), out


# -- recipes: recommending from an empty catalogue ----------------------------------------
def test_recommend_without_a_catalogue_says_which_import_is_missing(sample: Path) -> None:
    fails(tailormail("recommend", "u001", cwd=sample), "no items to recommend", "import items")
    tailormail("import", "items", "items.csv", cwd=sample)
    done = tailormail("recommend", "u001", "-k", "3", cwd=sample)
    assert done.returncode == 0, done.stderr
    assert "3 items for u001" in done.stdout
