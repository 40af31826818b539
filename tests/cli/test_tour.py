"""The README's tour, as a new user runs it: init, import, send, serve, click, report."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tailormail(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def env() -> dict[str, str]:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TAILORMAIL_")}
    return clean | {
        "COLUMNS": "200",
        "TAILORMAIL_TRACKING_BASE_URL": f"http://127.0.0.1:{port}",
        "TAILORMAIL_WEB__PORT": str(port),
    }


def test_the_readme_tour(tmp_path: Path, env: dict[str, str]) -> None:
    project = tmp_path / "alerts"
    done = tailormail("init", str(project), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert (project / "config" / "campaigns" / "weekly-picks.toml").is_file()

    for kind, name in (
        ("recipients", "people.csv"),
        ("items", "items.csv"),
        ("interactions", "interactions.csv"),
    ):
        done = tailormail("import", kind, name, cwd=project, env=env)
        assert done.returncode == 0, done.stderr
        assert "Imported" in done.stdout

    done = tailormail("send", "weekly-picks", cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    counts = re.search(r"│\s+40\s+│\s+0\s+│\s+0\s+│\s+0\s+│\s+40\s+│\s+0\s+│", done.stdout)
    assert counts, done.stdout  # audience, already done, retried, skipped, sent, deferred
    messages = sorted((project / "outbox").glob("*.eml"))
    assert len(messages) == 40

    port = env["TAILORMAIL_WEB__PORT"]
    server = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--host", "127.0.0.1", "--port", port],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = env["TAILORMAIL_TRACKING_BASE_URL"]
        for _ in range(100):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("tailormail serve did not answer /health")
        shown = tailormail("outbox", "--newest", "1", cwd=project, env=env)
        assert shown.returncode == 0, shown.stderr
        link = re.search(rf"({re.escape(base)}/c/\S+)", shown.stdout)
        assert link, shown.stdout
        answer = httpx.get(
            link.group(1),
            follow_redirects=False,
            timeout=5,
            headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"},
        )
        assert answer.status_code == 302
        assert answer.headers["location"].startswith("https://shop.example.com/items/")
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=20)

    done = tailormail("report", "weekly-picks", cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    rows = [
        line for line in done.stdout.splitlines() if re.match(r"│ (plain|visual|digest) ", line)
    ]
    assert len(rows) == 3
    clicks = sum(int(line.split("│")[3]) for line in rows)
    sends = sum(int(line.split("│")[2]) for line in rows)
    assert (sends, clicks) == (40, 1)


def test_a_bad_import_file_exits_non_zero_and_names_the_row(
    tmp_path: Path, env: dict[str, str]
) -> None:
    project = tmp_path / "alerts"
    assert tailormail("init", str(project), cwd=tmp_path, env=env).returncode == 0
    (project / "bad.csv").write_text("id,email\nu1,a@example.com\nu2,not-an-email\n")
    done = tailormail("import", "recipients", "bad.csv", cwd=project, env=env)
    assert done.returncode == 2
    assert "row 3" in done.stderr and "email" in done.stderr


def test_a_bad_config_key_exits_non_zero_and_names_the_key(
    tmp_path: Path, env: dict[str, str]
) -> None:
    project = tmp_path / "alerts"
    assert tailormail("init", str(project), cwd=tmp_path, env=env).returncode == 0
    config = project / "config" / "tailormail.toml"
    config.write_text(config.read_text().replace("from_address", "from_adress"))
    done = tailormail("send", "weekly-picks", cwd=project, env=env)
    assert done.returncode == 2
    assert "unknown key 'from_adress'" in done.stderr


# -- issue 18: the schedule view, `check`, time zones and the demo path, as documented ----
ROOT = Path(__file__).resolve().parents[2]


def _documented_output(doc: Path, command: str) -> str:
    """The ``` block right after the ```sh block holding ``command`` in ``doc``."""
    found = re.search(
        rf"```sh\n{re.escape(command)}\n```\n```\n(.*?)```", doc.read_text(), re.DOTALL
    )
    assert found, f"{doc} shows no output for {command!r}"
    return found.group(1)


def test_the_guides_schedule_view_and_check(tmp_path: Path, env: dict[str, str]) -> None:
    project = tmp_path / "alerts"
    assert tailormail("init", str(project), cwd=tmp_path, env=env).returncode == 0
    command = "tailormail schedule --after 2026-03-01T00:00"
    done = tailormail(*command.split()[1:], cwd=project, env=env)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == _documented_output(ROOT / "docs" / "guide.md", command)

    done = tailormail("check", "-n", "1", "--after", "2026-03-01T00:00", cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("configuration: ok (settings, 1 campaign, plugins,")
    assert "  weekly-picks: audience of 0\n" in done.stdout
    assert "    Mon 2026-03-02 09:00 UTC\nnot ready for real mail: tracking_base_url" in done.stdout
    assert "keeps mail on this machine: change these before real mail)\n" in done.stdout
    assert done.stdout.endswith("nothing was sent.\n")
    assert not (project / "outbox").exists() or not any((project / "outbox").iterdir())

    # A numeric weekday: the one-time notice (once: tests/sending/test_schedules.py).
    campaign = project / "config" / "campaigns" / "weekly-picks.toml"
    campaign.write_text(campaign.read_text().replace('"0 9 * * MON"', '"0 9 * * 1"'))
    first = tailormail("schedule", "-n", "1", "--after", "2026-03-01T00:00", cwd=project, env=env)
    assert "Mon 2026-03-02 09:00 UTC" in first.stdout
    assert first.stderr.startswith("warning: schedules are now read as crontab(5) reads them")
    assert "'0 9 * * 1' now fires on Monday; it used to fire on Tuesday" in first.stderr


def test_a_misspelled_time_zone_stops_every_command_at_start_up(
    sample_project: Path, env: dict[str, str]
) -> None:
    project = sample_project  # the repository's config/ and templates/, as init writes them
    wrong = env | {"TAILORMAIL_SCHEDULER__TIMEZONE": "Europe/Pari"}
    for command in (["runs"], ["serve", "--port", env["TAILORMAIL_WEB__PORT"]]):
        done = tailormail(*command, cwd=project, env=wrong)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert done.stderr == (
            "error: TAILORMAIL_SCHEDULER__TIMEZONE: invalid value for 'scheduler.timezone': "
            "'Europe/Pari' is not an IANA time zone (like 'UTC' or 'Europe/Paris'); did you "
            "mean 'Europe/Paris' or 'Europe/Madrid' or 'Europe/Zurich'?\n"
        )
        assert "scheduler" not in done.stdout  # nothing claimed leadership first


def _readme_block(after: str) -> list[str]:
    """The commands of the README's ```sh block that starts with ``after``."""
    text = (ROOT / "README.md").read_text()
    found = re.search(rf"```sh\n({re.escape(after)}.*?)```", text, re.DOTALL)
    assert found, f"README.md has no ```sh block starting with {after!r}"
    return [line.split("  #")[0].strip() for line in found.group(1).splitlines()]


def test_the_readme_path_to_evaluation_and_training_without_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command of the README's demo block, in process (the CLI's own app), in order;
    the demo is made smaller (3 rounds of 120: training's 100 rewarded decisions)."""
    from typer.testing import CliRunner

    from engine.cli.commands import app

    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("TAILORMAIL_")]:
        monkeypatch.delenv(name)
    expected = {
        "report demo-vw": "champion over time",
        "rewards": "demo-vw: 0 rewards joined",
        "export demo-vw --format dsjson -o log.json": "exported 120 decisions of demo-vw",
        "evaluate demo-vw": "champion",
        "train demo-vw": "demo-vw",
        "models demo-vw": "model versions of demo-vw",
        "rollback demo-vw": "is the champion again, pinned",
        "rollback demo-vw --release": "learning and promotions resume",
    }
    commands = _readme_block("tailormail demo")
    assert commands[:2] == ["tailormail demo", "cd demo-run"]
    assert [c.removeprefix("tailormail ") for c in commands[2:]] == list(expected)
    runner = CliRunner()
    small = ["demo", "--rounds", "3", "--recipients", "120", "--seed", "3"]
    done = runner.invoke(app, small, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    monkeypatch.chdir(tmp_path / "demo-run")
    for command, shown in expected.items():
        done = runner.invoke(app, command.split(), catch_exceptions=False)
        assert done.exit_code == 0, (command, done.output)
        assert shown in " ".join(done.output.split()), (command, done.output)
    assert len((tmp_path / "demo-run" / "log.json").read_text().splitlines()) == 120
