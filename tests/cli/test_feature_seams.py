"""Issue 18, features that meet cleanly: webhook secrets only where served, plugin commands
that find the project like every command, whole run ids, hints that run as printed.

One project made by ``tailormail init`` is shared, run as a user runs it (subprocesses):
a Mailgun webhook enabled whose secret variable is unset (only ``serve`` needs it), the
sample data imported, the campaign sent once with a one-second attribution window, and
its rewards joined, so it has a model.
"""

from __future__ import annotations

import re
import shlex
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kit.cli import fails, tailormail
from rich.console import Console

from engine.app import Engine
from engine.cli.runs_table import print_runs
from engine.errors import ConfigError
from engine.sending.run_history import RunInfo
from engine.web import create_app

CAMPAIGN = "weekly-picks"
WEBHOOK = '\n[plugins.webhooks.mailgun]\nsigning_key_env = "SEAMS_UNSET_MAILGUN_KEY"\n'


def ok(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = tailormail(*args, cwd=cwd, env=env)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def hint(output: str, command: str) -> list[str]:
    """The printed `tailormail COMMAND ...` hint, as the argument list a shell would run."""
    found = re.search(rf"`tailormail ({command}\b[^`]*)`", " ".join(output.split()))
    assert found, output
    return shlex.split(found.group(1))


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seams")
    ok("init", "shop", cwd=root)
    project = root / "shop"
    with (project / "config" / "tailormail.toml").open("a") as config:
        config.write(WEBHOOK)
    campaign = project / "config" / "campaigns" / f"{CAMPAIGN}.toml"
    text = campaign.read_text()
    campaign.write_text(text.replace('attribution_window = "3d"', 'attribution_window = "1s"'))
    for kind, file in (("recipients", "people.csv"), ("items", "items.csv")):
        ok("import", kind, file, cwd=project)
    ok("send", CAMPAIGN, cwd=project)
    time.sleep(1.1)  # the one-second attribution windows close (a wait, not a timing assert)
    ok("rewards", cwd=project)
    return project


# -- a provider webhook's secret is needed only where the webhook is served ----------------
def test_only_serve_needs_the_webhook_secret(shop: Path) -> None:
    # The fixture imported, sent and joined rewards without it; a report needs none either.
    assert "weekly-picks" in ok("report", CAMPAIGN, cwd=shop)
    done = tailormail("serve", "--port", "0", cwd=shop)
    assert done.returncode == 2, (done.stdout, done.stderr)
    error = " ".join(done.stderr.split("error: ", 1)[1].split())  # after serve's log lines
    assert error.startswith(
        "plugins.webhooks.mailgun: environment variable 'SEAMS_UNSET_MAILGUN_KEY' is not set; "
        "the server needs it to verify POST /webhooks/mailgun"
    )
    assert "scheduler" not in done.stdout  # refused before campaigning for leadership


def test_the_engine_starts_without_the_secret_and_the_web_app_does_not(
    shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEAMS_UNSET_MAILGUN_KEY", raising=False)
    with Engine(project_dir=shop) as engine:
        assert not engine.webhook_handlers.get("mailgun").enabled
        with pytest.raises(ConfigError, match="SEAMS_UNSET_MAILGUN_KEY"):
            create_app(engine)
        monkeypatch.setenv("SEAMS_UNSET_MAILGUN_KEY", "k" * 32)
        create_app(engine)
        assert engine.webhook_handlers.get("mailgun").enabled


# -- every command, plugin commands included, gets the project the same way -----------------
@pytest.mark.parametrize(
    "command", [("recommend", "u001"), ("similar", "i001"), ("evaluate-recipe",)]
)
def test_recipe_commands_outside_a_project_create_nothing(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    fails(tailormail(*command, cwd=tmp_path), "not in a tailormail project")
    assert list(tmp_path.iterdir()) == []  # no .tailormail-secret, no tailormail.db


def test_recipe_commands_take_the_project_like_every_command(shop: Path) -> None:
    outside = shop.parent
    shown = ok("--project", "shop", "recommend", "u001", "-k", "3", cwd=outside)
    assert "3 items for u001" in shown
    assert "items like i001" in ok("similar", "i001", "--project", str(shop), cwd=outside)
    assert sorted(p.name for p in outside.iterdir()) == ["shop"]


# -- runs never truncates a run id ----------------------------------------------------------
def test_runs_prints_whole_ids_in_a_narrow_terminal_and_alone_with_ids(shop: Path) -> None:
    ids = ok("runs", "--ids", cwd=shop).split()
    assert len(ids) == 1 and ids[0].startswith(f"{CAMPAIGN}@manual-")
    narrow = ok("runs", cwd=shop, env={"COLUMNS": "80"})
    assert ids[0] in narrow.split()
    assert "…" not in narrow
    assert max(len(line) for line in narrow.splitlines()) <= 80


@pytest.mark.parametrize("width", [60, 100, 250])
def test_every_width_shows_each_run_id_whole(width: int) -> None:
    started = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    found = [
        RunInfo(
            f"{CAMPAIGN}@manual-20261207T0900{i:02d}-4939a1b2c3{i:02d}",
            CAMPAIGN,
            "failed",
            started,
            None,
            "boom",
            {"sent": 3},
            shards=2,
            workers=2,
        )
        for i in range(3)
    ]
    console = Console(width=width, record=True)
    print_runs(console, found, "runs", ids=False)
    shown = console.export_text()
    for info in found:
        assert info.run_id in shown.split()
        assert f"{info.run_id} failed: boom" in shown
    listing = shown.split(f"{found[0].run_id} failed: boom")[0]  # before the error lines
    assert "…" not in shown and max(map(len, listing.splitlines())) <= width
    assert ("┃ run " in shown) == (width == 250)  # the table where it fits, blocks elsewhere
    console = Console(width=width, record=True)
    print_runs(console, found, "runs", ids=True)
    assert console.export_text().split() == [info.run_id for info in found]


# -- every printed hint is a command that runs as printed -----------------------------------
def test_rollback_and_report_hints_run_as_printed(shop: Path) -> None:
    wide = {"COLUMNS": "1000"}  # table cells on one line each
    version = f"{CAMPAIGN}-vw-v1"
    pinned = ok("rollback", CAMPAIGN, version, cwd=shop, env=wide)
    assert hint(pinned, "rollback") == ["rollback", CAMPAIGN, "--release"]
    audit = ok("models", CAMPAIGN, cwd=shop, env=wide)
    release = hint(audit, "rollback")
    assert release == ["rollback", CAMPAIGN, "--release"]
    report = ok("report", CAMPAIGN, cwd=shop, env=wide)
    assert f"model versions of {CAMPAIGN}" in ok(*hint(report, "models"), cwd=shop, env=wide)
    assert f"released {version}" in ok(*release, cwd=shop)


def test_the_recipient_hint_of_send_runs_as_printed(shop: Path) -> None:
    message = fails(tailormail("send", CAMPAIGN, "--recipient", "u001", cwd=shop), "--test-to")
    preview = hint(message, "preview")
    assert preview == ["preview", CAMPAIGN, "--recipient", "u001"]
    assert "wrote" in ok(*preview, "--out", str(shop.parent / "preview"), cwd=shop)


def test_runs_reads_the_history_when_a_template_is_broken(shop: Path, tmp_path: Path) -> None:
    """``runs`` opens the settings and the database only (``engine.store``): a broken
    template stops what renders, not the look at what was sent."""
    copy = tmp_path / "shop"
    shutil.copytree(shop, copy)
    (copy / "templates" / "weekly" / "plain.txt").write_text("{% for item in items %}\n")
    listed = ok("runs", cwd=copy, env={"COLUMNS": "80"})
    assert re.search(rf"{CAMPAIGN}@\S+", listed) and "sent 40" in " ".join(listed.split())
    fails(tailormail("send", CAMPAIGN, cwd=copy), "weekly/plain.txt", "endfor")
    fails(tailormail("runs", "nope", cwd=copy), "unknown campaign 'nope'")
