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
from kit.cli import fails, imported, tailormail


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

    from engine.sending.pipeline import run_id_for
    from engine.sending.runs import manual_run_id

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


# -- item 4: no expected failure prints a traceback; one line, exit 2, no markup --------
def _deep_jsonl(project: Path) -> None:
    deep = '{"id": "u1", "email": "a@example.com", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    (project / "deep.jsonl").write_text(deep + "\n")


START_UP_FAILURES = [
    # (name, arguments, environment, phrases of the one error line)
    ("postgres-scheme", ("report", "weekly-picks"),
     {"TAILORMAIL_DATABASE_URL": "postgres://me@127.0.0.1/shop"}, ("write 'postgresql://'",)),
    ("missing-driver", ("report", "weekly-picks"),
     {"TAILORMAIL_DATABASE_URL": "postgresql+pg8000://me@127.0.0.1/shop"},
     ("pip install 'tailormail[postgres]'",)),
    ("unreachable", ("report", "weekly-picks"),
     {"TAILORMAIL_DATABASE_URL": "postgresql+psycopg2://me:pw@127.0.0.1:{port}/shop"},
     ("cannot open the database postgresql+psycopg2://me:***@127.0.0.1", "Connection refused")),
    ("sqlite-path", ("report", "weekly-picks"),
     {"TAILORMAIL_DATABASE_URL": "sqlite:///no/such/dir/shop.db"},
     ("cannot create the database", "no/such/dir does not exist")),
    ("empty-secret-file", ("report", "weekly-picks"), {"TAILORMAIL_SECRET_FILE": "empty"},
     ("secret file", "empty is empty")),
    ("secret-directory", ("report", "weekly-picks"), {"TAILORMAIL_SECRET_FILE": "templates"},
     ("secret file", "templates is a directory")),
    ("empty-secret-variable", ("report", "weekly-picks"), {"TAILORMAIL_SECRET": ""},
     ("TAILORMAIL_SECRET is set but empty",)),
    ("deep-jsonl", ("import", "recipients", "deep.jsonl"), {},
     ("deep.jsonl, row 1: is nested too deeply",)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "phrases"),
    [case[1:] for case in START_UP_FAILURES],
    ids=[case[0] for case in START_UP_FAILURES],
)
def test_expected_failures_are_one_line_and_exit_2(
    sample: Path, args: tuple[str, ...], env: dict[str, str], phrases: tuple[str, ...]
) -> None:
    (sample / "empty").write_text("")
    _deep_jsonl(sample)
    env = {key: value.format(port=closed_port()) for key, value in env.items()}
    done = tailormail(*args, cwd=sample, env=env)
    fails(done, *phrases)
    assert done.stderr.strip().count("\n") == 0, done.stderr  # one line


def test_messages_keep_their_square_brackets_and_name_the_campaign(sample: Path) -> None:
    """Items 4 and 11: '[policy]' is printed as is, and a policy error names its campaign."""
    campaign = sample / "config" / "campaigns" / "weekly-picks.toml"
    text = campaign.read_text()
    campaign.write_text(text.replace("[policy]\n", "[policy]\nepsilonn = 0.1\n", 1))
    fails(tailormail("report", "weekly-picks", cwd=sample), "campaign 'weekly-picks': [policy]")


# -- items 10 and 11: start-up names the key (or the variable that set it) ---------------
def test_start_up_names_the_key_or_the_environment_variable(sample: Path) -> None:
    fails(
        tailormail("report", "weekly-picks", cwd=sample, env={"TAILORMAIL_WEB__PORT": "eighty"}),
        "TAILORMAIL_WEB__PORT: invalid value for 'web.port'",
    )
    config = sample / "config" / "tailormail.toml"
    text = config.read_text().replace('"http://127.0.0.1:8025"', '"links.example.com"', 1)
    config.write_text(text)
    fails(
        tailormail("report", "weekly-picks", cwd=sample),
        "tailormail.toml: invalid value for 'tracking_base_url'",
        "is not an absolute http:// or https:// URL",
    )


def test_a_template_syntax_error_stops_every_command_before_anything_is_sent(
    sample: Path,
) -> None:
    imported(sample, "recipients", "items")
    template = next((sample / "templates").rglob("*.html"))
    template.write_text(template.read_text() + "\n{% for item in %}\n")
    fails(tailormail("send", "weekly-picks", cwd=sample), "campaign 'weekly-picks': variant")
    assert not (sample / "outbox").exists()


# -- items 13 and 14: addresses are identities; imports report what they cannot link ------
def test_one_address_in_two_cases_is_an_import_error_naming_both_rows(sample: Path) -> None:
    (sample / "twins.csv").write_text("id,email\nk1,Kim@Example.com\nk2,kim@example.COM\n")
    fails(
        tailormail("import", "recipients", "twins.csv", cwd=sample),
        "twins.csv, row 3, column 'email'",
        "also the address of row 2 (recipient 'k1')",
    )
    (sample / "intl.csv").write_text("id,email\nj1,jörg@example.com\n")
    fails(tailormail("import", "recipients", "intl.csv", cwd=sample), "row 2", "SMTPUTF8")


def test_interactions_naming_unknown_people_are_reported_and_refused_when_strict(
    sample: Path,
) -> None:
    imported(sample, "items")
    done = tailormail("import", "interactions", "interactions.csv", cwd=sample)
    assert done.returncode == 0, done.stderr
    warning = " ".join(done.stderr.split())
    assert re.search(r"warning: \d+ interactions name recipients that are not imported", warning)
    fails(
        tailormail("import", "interactions", "interactions.csv", "--strict", cwd=sample),
        "names recipient",
        "which is not imported",
    )


def test_a_password_with_an_unencoded_at_sign_is_named_without_showing_it(sample: Path) -> None:
    url = "postgresql+psycopg2://alerts:s3cr@t@127.0.0.1/tailormail"
    message = fails(
        tailormail("runs", cwd=sample, env={"TAILORMAIL_DATABASE_URL": url}),
        "hold an '@'",
        "%40",
        "***@127.0.0.1",
    )
    assert "s3cr" not in message and "@t@" not in message


def test_a_template_that_lists_items_of_an_email_without_items_says_so(sample: Path) -> None:
    for kind in ("recipients", "items"):
        imported(sample, kind)
    campaign = sample / "config" / "campaigns" / "weekly-picks.toml"
    text = campaign.read_text()
    campaign.write_text(text.replace("items_per_email = 4", "items_per_email = 0"))
    fails(
        tailormail("send", "weekly-picks", "--dry-run", cwd=sample),
        "this email had no items to show",
        "items_per_email is 0",
        "set items_per_email to 1 or more",
    )
    assert not (sample / "outbox").exists()


def test_an_export_to_a_folder_that_does_not_exist_is_one_line(sample: Path) -> None:
    fails(
        tailormail("export", "weekly-picks", "-o", "nowhere/x.jsonl", cwd=sample),
        "export -o nowhere/x.jsonl: cannot write it (No such file or directory)",
    )


def test_a_new_run_id_that_is_no_word_is_refused(sample: Path) -> None:
    imported(sample, "recipients", "items")
    for command in (("send", "weekly-picks"), ("send", "weekly-picks", "--dry-run")):
        fails(
            tailormail(*command, "--new-run", "my run/../x", cwd=sample),
            "--new-run 'my run/../x': a run id is 1-128 letters, digits",
        )
    assert not (sample / "outbox").exists() and not (sample / "rehearsals").exists()


def test_an_unreachable_celery_broker_is_one_line_with_the_command_that_continues(
    sample: Path,
) -> None:
    imported(sample, "recipients", "items")
    broker = {
        "TAILORMAIL_WORKERS__EXECUTOR": "celery",
        "TAILORMAIL_WORKERS__SHARD_SIZE": "5",
        "TAILORMAIL_WORKERS__CELERY__BROKER_URL": "redis://:hunter2@127.0.0.1:9/0",
    }
    message = fails(
        tailormail("send", "weekly-picks", "--new-run", "b1", cwd=sample, env=broker),
        "cannot reach the Celery broker redis://:**@127.0.0.1:9/0",
        "continue with `tailormail send weekly-picks --run b1`",
    )
    assert "hunter2" not in message
