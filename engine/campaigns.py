"""Campaigns as code: ``config/campaigns/*.toml``, validated when the engine starts."""

from __future__ import annotations

import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.durations import duration_field
from engine.errors import ConfigError
from engine.recommendation.filters import FilterConfig
from engine.settings import format_validation_error
from engine.types import Recipient, Variant

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def cron_trigger(schedule: str, timezone: str = "UTC") -> CronTrigger:
    """The trigger of a crontab line: five fields, or six with seconds first
    (``*/10 * * * * *`` fires every ten seconds), as Quartz and node-cron read them."""
    fields = schedule.split()
    if len(fields) == 6:
        second, minute, hour, day, month, day_of_week = fields
        return CronTrigger(
            second=second,
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=day_of_week,
            timezone=timezone,
        )
    return CronTrigger.from_crontab(schedule, timezone=timezone)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VariantConfig(_Strict):
    """One variant: key, subject template, body template (under ``templates/``), features."""

    key: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    subject: str = Field(min_length=1)
    template: str = Field(min_length=1)
    features: dict[str, str | int | float | bool] = Field(default_factory=dict)

    def as_variant(self) -> Variant:
        """The public ``Variant`` value."""
        return Variant(self.key, self.subject, self.template, dict(self.features))


class NamedPlugin(BaseModel):
    """A ``[recipe]`` or ``[policy]`` table: ``name`` plus that plugin's parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str

    @property
    def params(self) -> dict[str, Any]:
        """Every key of the table but ``name``."""
        return dict(self.model_extra or {})


class RewardConfig(_Strict):
    """Reward weights per event type and the attribution window."""

    click: float = 1.0
    open: float = 0.0
    unsubscribe: float = -1.0
    complaint: float = -2.0
    bounce: float = 0.0
    default: float = 0.0
    attribution_window: timedelta = timedelta(days=3)

    @field_validator("attribution_window", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return duration_field(value)


class Campaign(_Strict):
    """A recurring alert: who gets it, what it shows, which variants compete, how it learns."""

    name: str
    description: str = ""
    schedule: str | None = None
    audience: dict[str, str | int | float | bool | list[str | int | float | bool]] = Field(
        default_factory=dict
    )
    subject_prefix: str = ""
    from_address: str | None = None
    items_per_email: int = Field(default=5, ge=0, le=100)
    frequency_cap: timedelta | None = None
    recipe: NamedPlugin = NamedPlugin(name="popularity")
    filters: FilterConfig = Field(default_factory=FilterConfig)
    policy: NamedPlugin = NamedPlugin(name="vw")
    reward: RewardConfig = Field(default_factory=RewardConfig)
    variants: list[VariantConfig] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use lowercase letters, digits, '-' and '_' (at most 64)")
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            cron_trigger(value)
        return value

    @field_validator("frequency_cap", mode="before")
    @classmethod
    def _cap(cls, value: Any) -> Any:
        return duration_field(value)

    @field_validator("variants")
    @classmethod
    def _unique_keys(cls, value: list[VariantConfig]) -> list[VariantConfig]:
        keys = [v.key for v in value]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"duplicate variant keys: {', '.join(duplicates)}")
        return value

    @property
    def variant_list(self) -> list[Variant]:
        """The variants as public ``Variant`` values, in configured order."""
        return [v.as_variant() for v in self.variants]

    def in_audience(self, recipient: Recipient) -> bool:
        """True when every audience attribute matches (a list means any of its values)."""
        for key, wanted in self.audience.items():
            have = recipient.attributes.get(key)
            allowed = wanted if isinstance(wanted, list) else [wanted]
            if have not in allowed and str(have) not in {str(a) for a in allowed}:
                return False
        return True


def load_campaign(path: Path) -> Campaign:
    """Parse and validate one campaign file; errors name the file and the key."""
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    data.setdefault("name", path.stem)
    try:
        return Campaign.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from exc


def load_campaigns(directory: Path) -> dict[str, Campaign]:
    """Every ``*.toml`` in ``directory`` by campaign name; a name used twice is an error."""
    campaigns: dict[str, Campaign] = {}
    if not directory.is_dir():
        return campaigns
    for path in sorted(directory.glob("*.toml")):
        campaign = load_campaign(path)
        if campaign.name in campaigns:
            raise ConfigError(f"{path}: campaign name {campaign.name!r} is used twice")
        campaigns[campaign.name] = campaign
    return campaigns
