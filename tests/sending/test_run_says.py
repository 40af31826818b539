"""A run says what it did (issue 18): the CLI as a user runs it, in a subprocess.

An empty audience names its filter and the values present; a run stopped by an error or
by Ctrl-C says how many messages went out and prints the command that continues it,
which then works as printed; a finished run resumed mails nobody new unless asked.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kit.cli import fails, imported, tailormail
from kit.project import Project
from sqlalchemy.exc import OperationalError

from engine.sending.real_run import real_run

BROKEN = '{% if recipient.id == "u015" %}{{ recipient.nope.deeper }}{% endif %}'
"""Fails for one recipient only: u015, in the second batch of ten."""
CONTINUE = re.compile(r"`(tailormail send [^`]+)`")


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A project made by ``tailormail init``, its recipients and items imported."""
    done = tailormail("init", "shop", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return imported(tmp_path / "shop", "recipients", "items")


def set_audience(project: Path, audience: str) -> None:
    """Replace the sample campaign's audience filter."""
    campaign = project / "config" / "campaigns" / "weekly-picks.toml"
    text = re.sub(r"(?m)^audience = .*$", f"audience = {audience}", campaign.read_text())
    campaign.write_text(text)


def run_printed(
    message: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``tailormail send ...`` command ``message`` prints, as printed."""
    found = CONTINUE.search(message)
    assert found, message
    return tailormail(*shlex.split(found.group(1))[1:], cwd=cwd, env=env)


def eml_count(project: Path) -> int:
    """How many messages the outbox holds."""
    return len(list((project / "outbox").glob("*.eml")))


def test_an_empty_audience_names_the_filter_and_the_nearest_values(shop: Path) -> None:
    set_audience(shop, '{ country = "FRA" }')
    done = tailormail("send", "weekly-picks", cwd=shop)
    assert done.returncode == 1, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert message.startswith(
        "error: campaign 'weekly-picks': the audience is empty: "
        'country = "FRA" matches no recipient (the values of country are: FR, '
    ), message
    assert "fix the audience filter" in message and done.stderr.strip().count("\n") == 0
    assert not (shop / "outbox").exists()

    set_audience(shop, '{ country = "FR", plan = ["gold"] }')
    together = " ".join(tailormail("send", "weekly-picks", cwd=shop).stderr.split())
    assert 'plan = ["gold"] matches no recipient (the values of plan are: ' in together


def test_everyone_skipped_is_told_apart_from_an_empty_audience(shop: Path) -> None:
    assert tailormail("send", "weekly-picks", cwd=shop).returncode == 0
    again = tailormail("send", "weekly-picks", cwd=shop)
    assert again.returncode == 0, again.stderr
    out = " ".join(again.stdout.split())
    assert "nobody was sent: all 40 recipients this run reached were skipped" in out
    assert "the audience itself is not empty" in out and "audience is empty" not in again.stderr


def test_a_template_error_says_what_went_out_and_the_printed_command_finishes_it(
    shop: Path,
) -> None:
    templates = sorted((shop / "templates" / "weekly").glob("[dpv]*.html"))
    originals = {path: path.read_text() for path in templates}
    for path, text in originals.items():
        path.write_text(text.replace("{% endblock %}", BROKEN + "{% endblock %}"))
    env = {"TAILORMAIL_DELIVERY__BATCH_SIZE": "10"}
    stopped = tailormail("send", "weekly-picks", cwd=shop, env=env)
    message = fails(stopped, "has no attribute 'nope'", "10 messages of run weekly-picks@")
    assert "went out before it stopped; once that is fixed, continue with `tailormail send" in (
        message
    )
    assert eml_count(shop) == 10

    for path, text in originals.items():
        path.write_text(text)
    resumed = run_printed(message, shop)
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(
        r"│\s+40\s+│\s+10\s+│\s+10\s+│\s+0\s+│\s+30\s+│\s+0\s+│\s+0\s+│", resumed.stdout
    )
    assert eml_count(shop) == 40


def test_a_finished_run_resumed_mails_newcomers_only_with_include_new(shop: Path) -> None:
    first = tailormail("send", "weekly-picks", cwd=shop)
    run_id = re.search(r"run (weekly-picks@manual-\S+)", first.stdout)
    assert run_id, first.stdout
    (shop / "late.csv").write_text(
        "id,email,first_name,country,plan\nu900,late@example.com,L,FR,free\n"
    )
    assert tailormail("import", "recipients", "late.csv", cwd=shop).returncode == 0

    again = tailormail("send", "weekly-picks", "--run", run_id.group(1), cwd=shop)
    assert again.returncode == 0, again.stderr
    warning = " ".join(again.stderr.split())
    assert "1 audience members without a row in it were not sent (add --include-new" in warning
    assert eml_count(shop) == 40
    asked = tailormail("send", "weekly-picks", "--run", run_id.group(1), "--include-new", cwd=shop)
    assert asked.returncode == 0, asked.stderr
    assert eml_count(shop) == 41


def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``tailormail ARGS`` in its own process group, as a terminal's foreground job."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TAILORMAIL_")}
    return subprocess.Popen(
        [sys.executable, "-m", "engine", *args],
        cwd=cwd,
        env=clean | {"COLUMNS": "200"} | (env or {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def ctrl_c(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Send SIGINT to ``proc``'s whole process group (what Ctrl-C does); its output."""
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return out, err


def test_ctrl_c_of_send_says_what_went_out_and_the_run_continues(shop: Path) -> None:
    many = ["id,email,first_name,country,plan"]
    many += [f"m{i:04d},m{i}@example.com,M,FR,free" for i in range(400)]
    (shop / "many.csv").write_text("\n".join(many) + "\n")
    assert tailormail("import", "recipients", "many.csv", cwd=shop).returncode == 0
    proc = start(["send", "weekly-picks"], shop, {"TAILORMAIL_DELIVERY__BATCH_SIZE": "5"})
    deadline = time.monotonic() + 120
    while eml_count(shop) < 20 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    out, err = ctrl_c(proc)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    message = " ".join(err.split())
    found = re.fullmatch(
        r"error: interrupted: (\d+) messages of run (\S+) went out before Ctrl-C; "
        r"continue with `tailormail send weekly-picks --run \2`",
        message,
    )
    assert found, message
    assert 20 <= int(found.group(1)) <= eml_count(shop) < 440
    runs = tailormail("runs", cwd=shop)
    listed = " ".join(runs.stdout.split())
    assert "interrupted: stopped by Ctrl-C; continue with" in listed, (runs.stdout, runs.stderr)

    resumed = run_printed(message, shop)
    assert resumed.returncode == 0, resumed.stderr
    assert eml_count(shop) == 440
    cells = re.search(r"│\s+440\s+│\s+(\d+)\s+│\s+(\d+)\s+│\s+0\s+│\s+(\d+)\s+│", resumed.stdout)
    assert cells, resumed.stdout
    done, retried, sent = (int(n) for n in cells.groups())
    assert done + sent == 440 and retried <= 5  # sent counts the retried: each one once


def free_port() -> int:
    """A loopback port nobody listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def writer_processes(project: Path) -> list[int]:
    """The pids of intake writers serving ``project`` (children of ``serve``)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"engine.web.writer" in command and str(project).encode() in command:
            found.append(int(proc.name))
    return found


def test_ctrl_c_of_serve_stops_everything_cleanly(shop: Path) -> None:
    import httpx

    port = free_port()
    proc = start(["serve", "--port", str(port)], shop)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False).is_success:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("tailormail serve did not answer /health")
    while not writer_processes(shop) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the writer child is past its imports, in its loop
    out, err = ctrl_c(proc)
    assert proc.returncode == 0, (out, err)
    assert "Traceback" not in err and "Fatal Python error" not in err, err
    assert "stopped: the tracking server, its writer and the scheduler" in out
    assert "Scheduler has been shut down" in err
    assert writer_processes(shop) == []


def test_a_port_in_use_is_an_error_before_anything_starts(shop: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = tailormail("serve", "--port", str(port), cwd=shop)
    fails(done, f"port {port} on 127.0.0.1 is already in use", "--port or [web] port")
    assert "scheduler" not in done.stdout and "tracking server on" not in done.stdout
    assert done.stderr.strip().count("\n") == 0, done.stderr


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--port", "70000", "port 70000 is not a port: choose one from 0 (any free port) to 65535"),
        ("--port", "-1", "port -1 is not a port: choose one from 0 (any free port) to 65535"),
        ("--host", "999.1.1.1", "host '999.1.1.1' is not an address of this machine"),
    ],
)
def test_a_port_or_host_that_cannot_be_is_one_line(
    shop: Path, option: str, value: str, says: str
) -> None:
    done = tailormail("serve", f"{option}={value}", cwd=shop)
    fails(done, says, "--port or [web] port" if option == "--port" else "--host or [web] host")
    assert "Traceback" not in done.stderr and "stop what holds it" not in done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs mounted for the test (skipped where mounting is refused)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave_kib: int) -> Path:
    """Fill ``disk`` until ``leave_kib`` KiB are free; returns the filler file."""
    stats = os.statvfs(disk)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(stats.f_bavail * stats.f_frsize - leave_kib * 1024, 0))
    return filler


def test_a_full_outbox_disk_stops_the_run_in_one_line_and_it_resumes(
    shop: Path, small_disk: Path
) -> None:
    outbox = {"TAILORMAIL_DELIVERY__OUTBOX__PATH": str(small_disk)}
    filler = fill(small_disk, leave_kib=30)
    done = tailormail("send", "weekly-picks", cwd=shop, env=outbox)
    message = fails(
        done,
        f"out of disk space writing {small_disk} (No space left on device)",
        "went out before it stopped; once that is fixed, continue with `tailormail send",
    )
    assert done.stderr.strip().count("\n") == 0, done.stderr
    written = len(list(small_disk.glob("*.eml")))
    assert written < 40 and f"{written} messages of run" in message

    filler.unlink()
    resumed = run_printed(message, shop, outbox)
    assert resumed.returncode == 0, resumed.stderr
    assert len(list(small_disk.glob("*.eml"))) == 40


def test_a_full_database_disk_is_one_line_and_the_run_resumes(
    tmp_path: Path, small_disk: Path
) -> None:
    assert tailormail("init", "shop", cwd=small_disk).returncode == 0
    project = imported(small_disk / "shop", "recipients", "items")
    env = {
        "TAILORMAIL_DELIVERY__OUTBOX__PATH": str(tmp_path / "outbox"),
        "TAILORMAIL_DELIVERY__BATCH_SIZE": "5",
    }
    filler = fill(small_disk, leave_kib=250)
    done = tailormail("send", "weekly-picks", cwd=project, env=env)
    message = fails(done, "out of disk space", "free space")
    assert done.stderr.strip().count("\n") == 0, done.stderr

    filler.unlink()
    resumed = run_printed(message, project, env)
    assert resumed.returncode == 0, resumed.stderr
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 40


@pytest.mark.parametrize(
    ("marking", "warned"),
    [("database or disk is full", False), ("database is locked", True)],
)
def test_a_run_that_cannot_be_marked_says_so_unless_for_the_reason_it_stopped(
    sqlite_project: Project,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    marking: str,
    warned: bool,
) -> None:
    engine = sqlite_project.engine()
    run = real_run(engine, engine.campaign("alerts"), "r1")
    monkeypatch.setattr("engine.sending.pipeline.time.sleep", lambda _: None)

    def close(*_: Any) -> None:
        raise OperationalError("UPDATE runs", {}, sqlite3.OperationalError(marking))

    monkeypatch.setattr(run, "_close_run", close)
    stopped = OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
    with caplog.at_level("DEBUG", logger="engine.sending.pipeline"):
        run._close_stopped(stopped)
    records = [r for r in caplog.records if "could not be marked failed" in r.getMessage()]
    assert [r.levelname for r in records] == ["WARNING" if warned else "DEBUG"]
