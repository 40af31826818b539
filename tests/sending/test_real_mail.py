"""Issue 18: real mail needs real addresses.

A backend that reaches other machines refuses to start while the links point at this
machine, a private network or plain http://, or the sender is at a domain reserved for
examples; ``[delivery] allow_test_addresses`` allows it on purpose (staging). Backends
that keep mail here (outbox, memory, SMTP to localhost) are never stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kit.cli import fails, tailormail
from kit.project import Project

from engine.errors import ConfigError
from engine.realmail import address_problems, real_mail_problems
from engine.settings import load_settings
from plugins.delivery.outbox import OutboxBackend
from plugins.delivery.smtp import SMTPBackend

REMOTE = {"smtp": {"host": "smtp.mybiz.org"}}
READY = {"tracking_base_url": "https://t.mybiz.org", "from_address": "Alerts <alerts@mybiz.org>"}


def problems(tmp_path: Path, host: str = "smtp.mybiz.org", **settings: Any) -> list[str]:
    loaded = load_settings(
        project_dir=tmp_path, environ=settings.pop("environ", {}), overrides=settings
    )
    return real_mail_problems(loaded, SMTPBackend(None, host=host))


def test_smtp_to_another_host_names_both_keys_of_a_new_project(tmp_path: Path) -> None:
    found = problems(
        tmp_path, tracking_base_url="http://127.0.0.1:8025", from_address="alerts@example.com"
    )
    assert found == [
        "tracking_base_url: 'http://127.0.0.1:8025' is plain http:// and points at this "
        "machine (127.0.0.1), which recipients cannot open; set the public https:// address "
        "where `tailormail serve` answers",
        "from_address: 'alerts@example.com' is at example.com, a domain reserved for examples "
        "and tests; use an address at your own domain",
    ]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://localhost:8025", "points at this machine (localhost)"),
        ("https://[::1]:8025", "points at this machine (::1)"),
        ("https://10.0.0.5", "points at a private network address (10.0.0.5)"),
        ("https://192.168.1.2:8025", "points at a private network address (192.168.1.2)"),
        ("https://[fe80::1]", "points at a private network address (fe80::1)"),
        ("https://[::ffff:127.0.0.1]", "points at this machine (::ffff:127.0.0.1)"),
        ("https://tracking.internal", "private network name (tracking.internal, under .internal)"),
        ("https://t.example.org", "t.example.org, a domain reserved for examples"),
        ("http://t.mybiz.org", "is plain http://"),
    ],
)
def test_links_recipients_cannot_open_are_refused(tmp_path: Path, url: str, words: str) -> None:
    (found,) = problems(tmp_path, tracking_base_url=url, from_address="alerts@mybiz.org")
    assert found.startswith(f"tracking_base_url: {url!r} ") and words in found


@pytest.mark.parametrize(
    "sender", ["a@example.net", "A <a@mail.example.org>", "a@shop.test", "a@tailormail.invalid"]
)
def test_senders_at_reserved_domains_are_refused(tmp_path: Path, sender: str) -> None:
    (found,) = problems(tmp_path, tracking_base_url=READY["tracking_base_url"], from_address=sender)
    assert found.startswith(f"from_address: {sender!r} is at ")


def test_a_ready_project_a_local_backend_and_the_staging_switch_pass(tmp_path: Path) -> None:
    assert problems(tmp_path, **READY) == []
    for local in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert problems(tmp_path, host=local) == [], local
    staging = {"delivery": {"allow_test_addresses": True}}
    assert problems(tmp_path, **staging) == []
    loaded = load_settings(project_dir=tmp_path, environ={})
    assert real_mail_problems(loaded, OutboxBackend(None, path=str(tmp_path))) == []
    # What `check` shows, whatever the backend: the defaults are not ready for real mail.
    keys = [problem.split(":")[0] for problem in address_problems(loaded)]
    assert keys == ["tracking_base_url", "from_address"]


def test_the_environment_variable_that_set_a_key_is_named(tmp_path: Path) -> None:
    environ = {"TAILORMAIL_TRACKING_BASE_URL": "https://192.168.0.9"}
    (found, _) = problems(tmp_path, environ=environ)
    assert found.endswith("(set by TAILORMAIL_TRACKING_BASE_URL)")


def test_the_engine_refuses_to_start_naming_each_key_and_the_way_out(
    sqlite_project: Project,
) -> None:
    sqlite_project.add_campaign("promo", extra='from_address = "promo@example.org"')
    with pytest.raises(ConfigError) as info:
        sqlite_project.engine("smtp", delivery=REMOTE)
    message = str(info.value)
    assert message.startswith("delivery.backend 'smtp' sends real mail to other machines")
    assert "\n  tracking_base_url: 'http://127.0.0.1:8025' is plain http://" in message
    assert "\n  from_address: 'alerts@tailormail.invalid' is at tailormail.invalid" in message
    assert "\n  campaign 'promo': from_address: 'promo@example.org' is at example.org" in message
    assert message.endswith("[delivery] allow_test_addresses = true)")
    with sqlite_project.engine("smtp", delivery=REMOTE | {"allow_test_addresses": True}):
        pass
    sqlite_project.add_campaign("promo", extra='from_address = "promo@mybiz.org"')
    with sqlite_project.engine("smtp", delivery=REMOTE, **READY) as engine:
        assert engine.make_backend().reaches_other_machines()
    with sqlite_project.engine("smtp") as engine:  # the default host: this machine
        assert not engine.make_backend().reaches_other_machines()


def test_the_cli_stops_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    assert tailormail("init", "shop", cwd=tmp_path).returncode == 0
    smtp = {
        "TAILORMAIL_DELIVERY__BACKEND": "smtp",
        "TAILORMAIL_DELIVERY__SMTP__HOST": "mx.mybiz.org",
    }
    fails(
        tailormail("send", "weekly-picks", cwd=tmp_path / "shop", env=smtp),
        "error: delivery.backend 'smtp' sends real mail",
        "tracking_base_url: 'http://127.0.0.1:8025'",
        "from_address: 'alerts@example.com' is at example.com",
        "allow_test_addresses = true",
    )
    assert not (tmp_path / "shop" / "outbox").exists()


def test_check_says_what_real_mail_needs_and_fails_only_when_it_would_send_it(
    tmp_path: Path,
) -> None:
    assert tailormail("init", "shop", cwd=tmp_path).returncode == 0
    local = tailormail("check", cwd=tmp_path / "shop")
    assert local.returncode == 0, local.stderr
    assert "not ready for real mail: tracking_base_url" in local.stdout
    assert "not ready for real mail: from_address" in local.stdout
    assert "keeps mail on this machine" in local.stdout
    staging = {
        "TAILORMAIL_DELIVERY__BACKEND": "smtp",
        "TAILORMAIL_DELIVERY__SMTP__HOST": "mx.mybiz.org",
        "TAILORMAIL_DELIVERY__ALLOW_TEST_ADDRESSES": "true",
    }
    sending = tailormail("check", cwd=tmp_path / "shop", env=staging)
    assert sending.returncode == 1, sending.stdout + sending.stderr
    assert "not ready for real mail: from_address" in sending.stdout
    assert "nothing was sent." in sending.stdout and "Traceback" not in sending.stderr
    ready = {
        "TAILORMAIL_TRACKING_BASE_URL": "https://t.mybiz.org",
        "TAILORMAIL_FROM_ADDRESS": "alerts@mybiz.org",
    }
    good = tailormail("check", cwd=tmp_path / "shop", env=staging | ready)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "ready for real mail" in good.stdout and "not ready" not in good.stdout
