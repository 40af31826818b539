"""Issue 18: durations carry their unit. A bare number is refused, naming the key and the
forms with units, for every duration setting; ``*_seconds`` keys keep taking numbers."""

from __future__ import annotations

import typing
from datetime import timedelta
from pathlib import Path

import pytest
from kit.project import Project
from pydantic import BaseModel

from engine.campaigns import Campaign
from engine.errors import ConfigError
from engine.settings import Settings, load_settings

BARE = 'is a bare number; write a duration with its unit: "6s", "6h", "6d"'

# Every duration key: (where it lives, the TOML line that sets it to a bare number).
SETTINGS_KEYS = {
    "frequency_cap": "frequency_cap = 6",
    "retention": "retention = 6",
    "api.idempotency_retention": "[api]\nidempotency_retention = 6",
    "api.trigger_retention": "[api]\ntrigger_retention = 6",
}
CAMPAIGN_KEYS = {  # the edit of the test campaign (tests/kit/project.py) that sets it
    "frequency_cap": ("[recipe]\n", "frequency_cap = 6\n[recipe]\n"),
    "reward.attribution_window": ('attribution_window = "1h"', "attribution_window = 6"),
    "filters.newer_than": ("[reward]\n", "[filters]\nnewer_than = 6\n[reward]\n"),
}


def _durations(model: type[BaseModel], prefix: str = "") -> set[str]:
    """The dotted names of every ``timedelta`` field of ``model`` and its sub-models."""
    found = set()
    for name, field in model.model_fields.items():
        kinds = typing.get_args(field.annotation) or (field.annotation,)
        for kind in kinds:
            if kind is timedelta:
                found.add(prefix + name)
            elif isinstance(kind, type) and issubclass(kind, BaseModel):
                found |= _durations(kind, f"{prefix}{name}.")
    return found


@pytest.mark.parametrize("key", sorted(SETTINGS_KEYS))
def test_a_bare_number_in_the_settings_is_refused(tmp_path: Path, key: str) -> None:
    config = tmp_path / "config" / "tailormail.toml"
    config.parent.mkdir()
    config.write_text(SETTINGS_KEYS[key] + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={})
    assert str(caught.value) == f"{config}: invalid value for '{key}': 6 {BARE}"
    variable = f"TAILORMAIL_{key.upper().replace('.', '__')}"
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "none", environ={variable: "6"})
    assert str(caught.value) == f"{variable}: invalid value for '{key}': 6 {BARE}"


@pytest.mark.parametrize("key", sorted(CAMPAIGN_KEYS))
def test_a_bare_number_in_a_campaign_is_refused(sqlite_project: Project, key: str) -> None:
    old, new = CAMPAIGN_KEYS[key]
    path = sqlite_project.root / "config" / "campaigns" / "alerts.toml"
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        sqlite_project.engine()
    assert str(caught.value) == f"{path}: invalid value for '{key}': 6 {BARE}"


def test_seconds_keys_take_numbers_where_duration_keys_refuse_them(tmp_path: Path) -> None:
    # The tables above name every duration key there is, so none escapes these tests.
    assert _durations(Settings) == set(SETTINGS_KEYS)
    assert _durations(Campaign) == set(CAMPAIGN_KEYS)
    config = tmp_path / "config" / "tailormail.toml"
    config.parent.mkdir()
    seconds = "[scheduler]\nmisfire_grace_seconds = 120\n[delivery]\nlease_seconds = 30\n"
    config.write_text('frequency_cap = "20h"\nretention = "400d"\n' + seconds)
    settings = load_settings(tmp_path, environ={})
    assert (settings.frequency_cap, settings.retention) == (timedelta(hours=20), timedelta(400))
    assert (settings.scheduler.misfire_grace_seconds, settings.delivery.lease_seconds) == (120, 30)
    config.write_text("retention = 400\n" + seconds)
    with pytest.raises(ConfigError, match="'retention': 400 is a bare number"):
        load_settings(tmp_path, environ={})
