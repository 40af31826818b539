"""Settings and campaigns as code: bad configuration stops start-up and names the key."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kit.project import Project

from engine.app import Engine
from engine.campaigns import load_campaign
from engine.durations import parse_duration
from engine.errors import ConfigError
from engine.settings import load_settings


def write_config(root: Path, text: str) -> None:
    (root / "config").mkdir(parents=True, exist_ok=True)
    (root / "config" / "tailormail.toml").write_text(text)


def test_embedded_defaults_without_a_config_file(tmp_path: Path) -> None:
    settings = load_settings(project_dir=tmp_path, environ={})
    assert settings.delivery.backend == "outbox"
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve()}/tailormail.db"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    write_config(tmp_path, 'database_url = "sqlite:///x.db"\ntraking_base_url = "http://x"\n')
    with pytest.raises(ConfigError, match="unknown key 'traking_base_url'"):
        load_settings(project_dir=tmp_path, environ={})


def test_unknown_nested_key_is_named_with_its_table(tmp_path: Path) -> None:
    write_config(tmp_path, "[scheduler]\nmisfire_grace = 10\n")
    with pytest.raises(ConfigError, match="unknown key 'scheduler.misfire_grace'"):
        load_settings(project_dir=tmp_path, environ={})


def test_invalid_value_is_named(tmp_path: Path) -> None:
    write_config(tmp_path, '[web]\nport = "eighty"\n')
    with pytest.raises(ConfigError, match="invalid value for 'web.port'"):
        load_settings(project_dir=tmp_path, environ={})


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    write_config(tmp_path, "database_url = \n")
    with pytest.raises(ConfigError, match="tailormail.toml: not valid TOML"):
        load_settings(project_dir=tmp_path, environ={})


def test_environment_overrides_and_unknown_variables(tmp_path: Path) -> None:
    write_config(tmp_path, '[delivery]\nbackend = "outbox"\n')
    settings = load_settings(
        project_dir=tmp_path,
        environ={"TAILORMAIL_DELIVERY__BACKEND": "smtp", "TAILORMAIL_WEB__PORT": "9000"},
    )
    assert (settings.delivery.backend, settings.web.port) == ("smtp", 9000)
    with pytest.raises(ConfigError, match="unknown key 'databse_url'"):
        load_settings(project_dir=tmp_path, environ={"TAILORMAIL_DATABSE_URL": "x"})


LONG_SECRET = "s3cr3t-value-that-is-long-enough-0123"


def test_secret_comes_from_the_environment_and_is_masked(tmp_path: Path) -> None:
    settings = load_settings(project_dir=tmp_path, environ={"TAILORMAIL_SECRET": LONG_SECRET})
    assert settings.secret_bytes() == LONG_SECRET.encode()
    assert LONG_SECRET not in repr(settings)
    write_config(tmp_path, 'secret = "in-the-file"\n')
    with pytest.raises(ConfigError, match="key 'secret' must not hold a secret"):
        load_settings(project_dir=tmp_path, environ={})


def test_secret_file_is_created_once_and_private(tmp_path: Path) -> None:
    settings = load_settings(project_dir=tmp_path, environ={})
    first = settings.secret_bytes()
    assert first == settings.secret_bytes() and len(first) >= 32
    assert (tmp_path / ".tailormail-secret").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [("", "TAILORMAIL_SECRET is set but empty"), ("short", "5 bytes long; it must be at least 32")],
)
def test_an_empty_or_short_environment_secret_is_an_error(
    tmp_path: Path, value: str, message: str
) -> None:
    """Issue 5 item 15: ``TAILORMAIL_SECRET`` is at least 32 bytes; empty is not 'unset'."""
    with pytest.raises(ConfigError, match=message):
        load_settings(project_dir=tmp_path, environ={"TAILORMAIL_SECRET": value})
    assert not (tmp_path / ".tailormail-secret").exists()


def test_the_secret_file_is_never_readable_by_others_even_while_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 5 item 15: created 0600 from its first byte, whatever the umask."""
    import os

    from engine import secret

    modes: list[int] = []
    real_open = os.open

    def watching_open(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        if flags & os.O_CREAT:
            modes.append(mode)
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(secret.os, "open", watching_open)
    old_umask = os.umask(0)  # the worst case: nothing masked
    try:
        data = secret.read_secret_file(tmp_path / "deep" / "secret")
    finally:
        os.umask(old_umask)
    assert modes == [0o600] and len(data) >= 32
    assert (tmp_path / "deep" / "secret").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["secret"]  # no temporary left


def test_a_readable_secret_file_warns(tmp_path: Path) -> None:
    from engine.secret import SecurityWarning, read_secret_file

    path = tmp_path / "secret"
    path.write_text("x" * 40)
    path.chmod(0o644)
    with pytest.warns(SecurityWarning, match=r"can be read by other users \(mode 0644\)"):
        assert read_secret_file(path) == b"x" * 40
    path.chmod(0o600)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_secret_file(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("\n"), "is empty"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.symlink_to(p), "cannot be read"),
    ],
    ids=["empty", "directory", "symlink-loop"],
)
def test_an_unusable_secret_file_is_named(
    tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    """Issue 5 item 4: an empty, unreadable or directory secret path is one clear error."""
    path = tmp_path / ".tailormail-secret"
    make(path)
    settings = load_settings(project_dir=tmp_path, environ={})
    with pytest.raises(ConfigError, match=f"secret file {path}.*{message}"):
        settings.secret_bytes()


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ('schedul = "0 9 * * *"', "unknown key 'schedul'"),
        ('schedule = "0 25 * * *"', "invalid value for 'schedule'"),
        ("items_per_email = -1", "invalid value for 'items_per_email'"),
        ('frequency_cap = "soon"', "invalid value for 'frequency_cap'"),
    ],
)
def test_campaign_errors_name_the_file_and_key(tmp_path: Path, snippet: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'{snippet}\n[[variants]]\nkey = "a"\nsubject = "s"\ntemplate = "t.html"\n')
    with pytest.raises(ConfigError, match=message) as error:
        load_campaign(path)
    assert str(path) in str(error.value)


def test_duplicate_variant_keys_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "dup.toml"
    variant = '[[variants]]\nkey = "a"\nsubject = "s"\ntemplate = "t.html"\n'
    path.write_text(variant * 2)
    with pytest.raises(ConfigError, match="duplicate variant keys: a"):
        load_campaign(path)


def test_engine_start_up_checks_plugins_and_templates(sqlite_project: Project) -> None:
    sqlite_project.add_campaign("ghost", policy="no-such-policy")
    with pytest.raises(ConfigError, match=r"campaign 'ghost': policy.name: unknown policy"):
        sqlite_project.engine()
    sqlite_project.add_campaign("ghost", extra="")
    (sqlite_project.root / "templates" / "t" / "a.html").unlink()
    with pytest.raises(ConfigError, match=r"variant 'a': template 't/a.html' not found"):
        sqlite_project.engine()


def test_bad_policy_parameter_is_named(sqlite_project: Project) -> None:
    path = sqlite_project.add_campaign("tuned", policy="vw")
    path.write_text(path.read_text().replace('name = "vw"', 'name = "vw"\nepsilonn = 0.2'))
    with pytest.raises(ConfigError, match="campaign 'tuned'.*epsilonn"):
        sqlite_project.engine()


def test_unknown_backend_and_backend_option(sqlite_project: Project) -> None:
    with pytest.raises(ConfigError, match="delivery.backend: unknown backend 'carrier-pigeon'"):
        sqlite_project.engine(backend="carrier-pigeon")
    with pytest.raises(ConfigError, match="delivery.outbox: unknown option 'pth'"):
        sqlite_project.engine(backend="outbox", delivery={"outbox": {"pth": "x"}})


def test_durations() -> None:
    assert parse_duration("90s").total_seconds() == 90
    assert parse_duration("3d").total_seconds() == 3 * 86400
    with pytest.raises(ValueError, match="5 is a bare number; write a duration with its unit"):
        parse_duration(5)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("3 days")


# -- issue 5 item 11: rejected at start-up, naming the key ------------------------------
def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("[reward]\n", "[reward]\nclick = inf\n", "'reward.click': Input should be a finite"),
        ("[reward]\n", "[reward]\ncomplaint = nan\n", "'reward.complaint': Input should be a"),
        ('attribution_window = "1h"', 'attribution_window = "0s"', "must be longer than zero"),
        ('attribution_window = "1h"', "attribution_window = 0", "'reward.attribution_window'"),
        ("items_per_email", 'from_address = "a@b.example\\r\\nBcc: x@y.example"\nitems_per_email',
         "'from_address': contains a control character"),
        ("items_per_email", 'from_address = "alerts at shop"\nitems_per_email',
         "'from_address': 'alerts at shop' is not one email address"),
        ("items_per_email", 'subject_prefix = "[Shop]\\nBcc: x@y.example"\nitems_per_email',
         "'subject_prefix': contains a control character"),
    ],
    ids=["inf-weight", "nan-weight", "zero-window", "zero-seconds", "from-crlf", "from-invalid",
         "prefix-crlf"],
)  # fmt: skip
def test_a_campaign_value_that_cannot_work_stops_start_up(
    sqlite_project: Project, old: str, new: str, message: str
) -> None:
    path = sqlite_project.add_campaign("alerts")
    _edit(path, old, new)
    with pytest.raises(ConfigError) as caught:
        sqlite_project.engine()
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("tracking_base_url", "t.example.com/track", "is not an absolute http:// or https:// URL"),
        ("tracking_base_url", "https://", "is not an absolute http:// or https:// URL"),
        ("tracking_base_url", "ftp://t.example.com", "is not an absolute http:// or https:// URL"),
        ("from_address", "Shop <shop@x.example>\nBcc: all@x.example", "control character"),
        ("from_address", "shop", "'shop' is not one email address"),
        ("from_address", "a@x.example, b@x.example", "is not one email address"),
    ],
)
def test_a_setting_that_cannot_work_stops_start_up_naming_the_key(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    write_config(tmp_path, f"{key} = {json.dumps(value)}\n")
    with pytest.raises(ConfigError, match=f"tailormail.toml: invalid value for '{key}'") as caught:
        load_settings(project_dir=tmp_path, environ={})
    assert message in str(caught.value)
    variable = f"TAILORMAIL_{key.upper()}"
    with pytest.raises(ConfigError, match=f"^{variable}: invalid value for '{key}'"):
        load_settings(project_dir=tmp_path, environ={variable: value})


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("../outside.html", "is outside templates_dir"),
        ("/etc/hostname", "is outside templates_dir"),
        ("t/a.txt", "is a text part's name"),
    ],
)
def test_a_template_outside_templates_dir_stops_start_up(
    sqlite_project: Project, template: str, message: str
) -> None:
    (sqlite_project.root / "outside.html").write_text("<p>not a template of ours</p>")
    (sqlite_project.root / "templates" / "t" / "a.txt").write_text("text")
    path = sqlite_project.add_campaign("alerts")
    _edit(path, 'template = "t/a.html"', f'template = "{template}"')
    with pytest.raises(ConfigError, match=f"campaign 'alerts': variant 'a': template .*{message}"):
        sqlite_project.engine()


@pytest.mark.parametrize(
    ("where", "source", "message"),
    [
        ("subject", "Hello {{ recipient.first_name", "variant 'a' (subject, line 1)"),
        ("t/a.html", "<p>{% if %}</p>", "variant 'a' (t/a.html, line 1)"),
        ("t/b.txt", "line one\n{% for x in %}", "variant 'b' (t/b.txt, line 2)"),
    ],
)
def test_a_template_syntax_error_stops_start_up(
    sqlite_project: Project, where: str, source: str, message: str
) -> None:
    path = sqlite_project.add_campaign("alerts")
    if where == "subject":
        _edit(path, 'subject = "Hello {{ recipient.first_name }}"', f'subject = "{source}"')
    else:
        (sqlite_project.root / "templates" / where).write_text(source)
    with pytest.raises(ConfigError, match=re.escape(f"campaign 'alerts': {message}")):
        sqlite_project.engine()


def test_a_policy_error_names_the_campaign(sqlite_project: Project) -> None:
    path = sqlite_project.add_campaign("tuned", policy="vw")
    _edit(path, 'name = "vw"', 'name = "vw"\nepsilon = 7')
    with pytest.raises(ConfigError, match=r"campaign 'tuned': \[policy\] vw: .*epsilon"):
        sqlite_project.engine()


# -- issue 5 item 10: environment overrides typed like the file, errors name the variable -
def test_environment_values_are_typed_like_toml_values(tmp_path: Path) -> None:
    settings = load_settings(
        project_dir=tmp_path,
        environ={
            "TAILORMAIL_DELIVERY__SMTP__STARTTLS": "false",
            "TAILORMAIL_DELIVERY__SMTP__PORT": "2525",
            "TAILORMAIL_PLUGINS__MINE__RATIO": "0.25",
            "TAILORMAIL_PLUGINS__MINE__TAGS": '["a", "b"]',
            "TAILORMAIL_PLUGINS__MINE__NAME": "false-start",
            "TAILORMAIL_SCHEDULER__COALESCE": "false",
        },
    )
    assert settings.delivery.options["smtp"] == {"starttls": False, "port": 2525}
    assert settings.plugins["mine"] == {"ratio": 0.25, "tags": ["a", "b"], "name": "false-start"}
    assert settings.scheduler.coalesce is False


def test_an_error_caused_by_the_environment_names_the_variable(sqlite_project: Project) -> None:
    with pytest.raises(ConfigError, match=r"^TAILORMAIL_WEB__PORT: invalid value for 'web.port'"):
        load_settings(project_dir=sqlite_project.root, environ={"TAILORMAIL_WEB__PORT": "x"})
    environ = {"TAILORMAIL_SECRET": "e" * 32, "TAILORMAIL_DELIVERY__OUTBOX__PTH": "x"}
    settings = load_settings(project_dir=sqlite_project.root, environ=environ)
    with pytest.raises(ConfigError, match=r"\(set by TAILORMAIL_DELIVERY__OUTBOX__PTH\)"):
        Engine(settings=settings, load_entry_points=False)
    environ = {"TAILORMAIL_SECRET": "e" * 32, "TAILORMAIL_PLUGINS__WEBHOOKS__POSTMARK__NOPE": "1"}
    settings = load_settings(project_dir=sqlite_project.root, environ=environ)
    with pytest.raises(ConfigError) as caught:
        Engine(settings=settings, load_entry_points=False)
    assert str(caught.value).startswith("plugins.webhooks.postmark.nope: ")
    assert str(caught.value).endswith("(set by TAILORMAIL_PLUGINS__WEBHOOKS__POSTMARK__NOPE)")
