"""A triggered campaign on the command line: `send` refuses it with what to do instead, and
a campaign file with both a schedule and a [trigger] table names the key at fault."""

from __future__ import annotations

import socket

import pytest
from kit.cli import fails, tailormail
from kit.project import TEST_SECRET, Project, toml_text
from kit.triggers import add_triggered_campaign

from engine.campaigns import load_campaign
from engine.errors import ConfigError


def test_send_refuses_a_triggered_campaign(sqlite_project: Project) -> None:
    add_triggered_campaign(sqlite_project)
    config = sqlite_project.root / "config" / "tailormail.toml"
    config.write_text(toml_text({"database_url": sqlite_project.db_url}))
    done = tailormail(
        "send", "pricedrop", cwd=sqlite_project.root, env={"TAILORMAIL_SECRET": TEST_SECRET}
    )
    fails(done, "campaign 'pricedrop' is triggered by the API", "POST /v1/campaigns/pricedrop")
    assert "sending" not in done.stdout  # refused before any progress bar


def test_a_campaign_cannot_be_both_scheduled_and_triggered(sqlite_project: Project) -> None:
    add_triggered_campaign(sqlite_project)
    path = sqlite_project.root / "config" / "campaigns" / "pricedrop.toml"
    path.write_text('schedule = "0 9 * * *"\n' + path.read_text())
    with pytest.raises(ConfigError) as caught:
        load_campaign(path)
    assert "invalid value for 'trigger'" in str(caught.value)
    assert "not both" in str(caught.value)
    typo = (
        path.read_text()
        .replace('schedule = "0 9 * * *"\n', "")
        .replace('link_hosts = ["shop.example.com"]', 'link_hosts = ["https://shop.example.com/"]')
    )
    path.write_text(typo)
    with pytest.raises(ConfigError) as caught:
        load_campaign(path)
    assert "trigger.link_hosts" in str(caught.value) and "is not a host name" in str(caught.value)


def test_api_on_a_port_in_use_names_the_api_settings(sqlite_project: Project) -> None:
    config = sqlite_project.root / "config" / "tailormail.toml"
    config.write_text(toml_text({"database_url": sqlite_project.db_url}))
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = str(busy.getsockname()[1])
        done = tailormail(
            "api", "--port", port, cwd=sqlite_project.root, env={"TAILORMAIL_SECRET": TEST_SECRET}
        )
    fails(done, f"port {port} on 127.0.0.1 is already in use", "[api] port")
