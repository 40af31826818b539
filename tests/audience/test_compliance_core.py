"""Compliance cannot be disabled by configuration (issue 17, Done-when 7): suppressions,
unsubscribes, bounces, complaints and forgotten addresses are checked by the core; the
frequency caps stay a plugin that may be replaced."""

from __future__ import annotations

from pathlib import Path

import pytest
from kit.cli import cli
from kit.project import Project

from engine.audience.forgetting import forget
from engine.db import session_scope
from engine.errors import ConfigError
from engine.models import CampaignSuppressionRow, SuppressionRow
from engine.scaffold import scaffold_project
from engine.sending.real_run import run_campaign


@pytest.mark.parametrize(
    ("module", "why"),
    [
        ("plugins.eligibility", "suppressions, unsubscribes, bounces and complaints"),
        ("plugins.forgotten", "forgotten addresses"),
    ],
)
def test_disabling_a_module_that_held_compliance_checks_refuses_to_start(
    sqlite_project: Project, module: str, why: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        sqlite_project.engine(disabled_plugins=[module])
    assert str(refused.value) == (
        f"disabled_plugins: {module!r} cannot be disabled: {why} are checked by the core "
        "on every send and no setting turns that off; remove it from disabled_plugins (to "
        "replace the frequency caps, disable 'plugins.frequency_caps' instead)"
    )


def test_the_command_line_exits_2_naming_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scaffold_project(tmp_path / "shop")
    config = tmp_path / "shop" / "config" / "tailormail.toml"
    text = config.read_text()
    assert "disabled_plugins = []" in text
    config.write_text(text.replace("= []", '= ["plugins.eligibility"]', 1))
    monkeypatch.chdir(tmp_path / "shop")
    assert cli(monkeypatch, "send", "weekly-picks") == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: disabled_plugins: 'plugins.eligibility' cannot be disabled")
    assert "checked by the core on every send" in line
    assert not (tmp_path / "shop" / "tailormail.db").exists()


def test_without_the_caps_plugin_the_core_still_skips_everyone_who_asked_for_no_mail(
    sqlite_project: Project,
) -> None:
    sqlite_project.add_campaign("capped", extra='frequency_cap = "30d"')
    engine = sqlite_project.engine(disabled_plugins=["plugins.frequency_caps"])
    sqlite_project.seed(engine, people=6)
    run_campaign(engine, "capped", run_id="first")  # a cap would hold everyone back now
    with session_scope(engine.db) as session:
        session.add(SuppressionRow(email="user1@example.com", reason="complaint"))
        session.add(SuppressionRow(email="user2@example.com", reason="hard_bounce"))
        session.add(CampaignSuppressionRow(email="user3@example.com", campaign="capped"))
    forget(engine, "u004")
    sqlite_project.seed(engine, people=6)  # the next sync brings u004 back
    campaign = engine.campaign("capped")
    people = engine.audience(campaign)
    assert engine.ineligible(campaign, people) == {
        "u001": "suppressed (complaint)",
        "u002": "suppressed (hard_bounce)",
        "u003": "unsubscribed from this campaign",
        "u004": "forgotten (erased on request: never mailed again)",
    }  # u000 and u005 were mailed minutes ago: no cap holds them, the plugin is off
