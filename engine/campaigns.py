"""Campaigns as code: ``config/campaigns/*.toml``, validated when the engine starts."""

from __future__ import annotations

import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from engine.addresses import check_sender
from engine.audience.filters import AudienceFilter
from engine.durations import duration_field
from engine.errors import ConfigError
from engine.recommendation.filters import FilterConfig
from engine.schedules import parse_schedule
from engine.settings import format_validation_error
from engine.types import Variant

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def cron_trigger(schedule: str, timezone: str = "UTC") -> BaseTrigger:
    """The trigger of a crontab line, read as crontab(5) reads it: five fields, or six
    with seconds first (``*/10 * * * * *`` fires every ten seconds); see
    ``engine.schedules``."""
    return parse_schedule(schedule).trigger(timezone)


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


_PART_KEY = r"^[A-Za-z0-9_-]{1,31}$"


class SubjectConfig(_Strict):
    """One subject line of a campaign that varies subjects and templates independently."""

    key: str = Field(pattern=_PART_KEY)
    subject: str = Field(min_length=1)
    features: dict[str, str | int | float | bool] = Field(default_factory=dict)


class TemplateConfig(_Strict):
    """One body template of a campaign that varies subjects and templates independently."""

    key: str = Field(pattern=_PART_KEY)
    template: str = Field(min_length=1)
    features: dict[str, str | int | float | bool] = Field(default_factory=dict)


def joint_variant(subject: SubjectConfig, template: TemplateConfig) -> dict[str, Any]:
    """The variant sending ``subject`` with ``template``: key ``<subject>.<template>``, and
    the features of both (prefixed ``subject_`` and ``template_``) plus their keys, so a
    policy generalizes across combinations."""
    features: dict[str, Any] = {"subject": subject.key, "template": template.key}
    features |= {f"subject_{k}": v for k, v in subject.features.items()}
    features |= {f"template_{k}": v for k, v in template.features.items()}
    return {
        "key": f"{subject.key}.{template.key}",
        "subject": subject.subject,
        "template": template.template,
        "features": features,
    }


class BaselineConfig(_Strict):
    """What acts for the control group, and for everyone in apprentice mode: a fixed
    ``variant``, or a ``policy`` (``uniform`` by default, or any registered rule)."""

    policy: str = "uniform"
    params: dict[str, Any] = Field(default_factory=dict)
    variant: str | None = None
    control_share: float = Field(default=0.0, ge=0, lt=1)
    apprentice: bool = False

    @property
    def policy_name(self) -> str:
        """The baseline's policy name (``fixed`` for a fixed variant)."""
        return "fixed" if self.variant else self.policy

    @property
    def policy_params(self) -> dict[str, Any]:
        """The baseline policy's parameters."""
        return {"variant": self.variant} if self.variant else dict(self.params)


class NamedPlugin(BaseModel):
    """A ``[recipe]`` or ``[policy]`` table: ``name`` plus that plugin's parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str

    @property
    def params(self) -> dict[str, Any]:
        """Every key of the table but ``name``."""
        return dict(self.model_extra or {})


class RewardConfig(_Strict):
    """Reward weights per event type (finite numbers) and the attribution window (> 0)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

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

    @field_validator("attribution_window")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than zero (events need time to arrive)")
        return value


class DeliverabilityConfig(_Strict):
    """When a campaign pauses itself: a complaint or hard-bounce rate over its last sends.

    The rates are counted over the campaign's last ``window`` sends (since its last resume),
    once there are at least ``min_sends`` of them. The defaults follow the mailbox
    providers' published limits (complaints under 0.3%) and the ESPs' bounce reviews (5%).
    """

    window: int = Field(default=1000, ge=1)
    min_sends: int = Field(default=100, ge=1)
    max_complaint_rate: float = Field(default=0.003, ge=0, le=1)
    max_hard_bounce_rate: float = Field(default=0.05, ge=0, le=1)


class FeaturesConfig(_Strict):
    """The ``[features]`` table: which recipient attributes the policy may see.

    ``allow`` lists the only attributes used (deny-listed personal ones included, on
    purpose); ``deny`` drops more; ``history = false`` turns off the engagement features
    (sends, clicks, days since the last click, clicks per variant).
    """

    allow: list[str] | None = None
    deny: list[str] = Field(default_factory=list)
    history: bool = True


_HOST = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]{0,62}\.)*[a-z0-9-]{1,63}$")
_EVENT_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class TriggerConfig(_Strict):
    """The ``[trigger]`` table: the campaign is sent when the API triggers it
    (``POST /v1/campaigns/{name}/trigger``), not on a schedule.

    ``context`` names the keys of a trigger's event data the policy sees (as
    ``event_<key>``); the rest is for templates only. ``link_hosts`` are the hosts whose
    URLs ``track_url()`` may turn into tracked links (``*.example.com`` for its subdomains):
    a caller's data reaches the template, so any other URL stays untracked text.
    """

    context: list[str] = Field(default_factory=list)
    link_hosts: list[str] = Field(default_factory=list)

    @field_validator("context")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        for key in value:
            if not _EVENT_KEY.match(key):
                raise ValueError(f"event key {key!r}: letters, digits and '_' (at most 64)")
        return value

    @field_validator("link_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        hosts = [host.strip().lower().rstrip(".") for host in value]
        for host in hosts:
            if not _HOST.match(host):
                raise ValueError(f"{host!r} is not a host name (example.com, *.example.com)")
        return hosts

    def allows_host(self, host: str) -> bool:
        """Whether ``track_url`` may track a link to ``host``."""
        host = host.lower().rstrip(".")
        return any(
            host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:]))
            for allowed in self.link_hosts
        )


class Campaign(_Strict):
    """A recurring alert: who gets it, what it shows, which variants compete, how it learns."""

    name: str
    description: str = ""
    schedule: str | None = None
    trigger: TriggerConfig | None = None  # sent when the API triggers it, not on schedule
    audience: AudienceFilter = Field(default_factory=dict)
    subject_prefix: str = ""
    from_address: str | None = None
    items_per_email: int = Field(default=5, ge=0, le=100)
    frequency_cap: timedelta | None = None
    recipe: NamedPlugin = NamedPlugin(name="popularity")
    # How much a click on an item inside an email counts in the recipe's fit, against 1
    # for an imported interaction's value (0 leaves email clicks out).
    email_click_weight: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    policy: NamedPlugin = NamedPlugin(name="vw")
    reward: RewardConfig = Field(default_factory=RewardConfig)
    deliverability: DeliverabilityConfig = Field(default_factory=DeliverabilityConfig)
    baseline: BaselineConfig | None = None
    subjects: list[SubjectConfig] = Field(default_factory=list)
    templates: list[TemplateConfig] = Field(default_factory=list)
    variants: list[VariantConfig] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _joint_variants(cls, data: Any) -> Any:
        """``subjects`` x ``templates`` become the variants (one decision per send)."""
        if not isinstance(data, dict) or not ("subjects" in data or "templates" in data):
            return data
        if data.get("variants"):
            raise ValueError("list either variants, or subjects and templates, not both")
        subjects = [SubjectConfig.model_validate(s) for s in data.get("subjects") or []]
        templates = [TemplateConfig.model_validate(t) for t in data.get("templates") or []]
        if not subjects or not templates:
            raise ValueError("subjects and templates each need at least one entry")
        return data | {"variants": [joint_variant(s, t) for s in subjects for t in templates]}

    @model_validator(mode="after")
    def _baseline_variant(self) -> Campaign:
        baseline = self.baseline
        keys = [v.key for v in self.variants]
        if baseline is not None and baseline.variant is not None and baseline.variant not in keys:
            raise ValueError(
                f"baseline.variant: {baseline.variant!r} is not one of the variants ({keys})"
            )
        return self

    @field_validator("trigger")
    @classmethod
    def _scheduled_or_triggered(
        cls, value: TriggerConfig | None, info: ValidationInfo
    ) -> TriggerConfig | None:
        if value is not None and info.data.get("schedule") is not None:
            raise ValueError(
                "a campaign is scheduled (schedule) or triggered by the API ([trigger]), not "
                "both: make a second campaign file for the other"
            )
        return value

    @property
    def triggered(self) -> bool:
        """Whether the API triggers this campaign (its ``[trigger]`` table)."""
        return self.trigger is not None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use lowercase letters, digits, '-' and '_' (at most 64)")
        return value

    @field_validator("subject_prefix")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if _CONTROL.search(value):
            raise ValueError("contains a control character (CR, LF, tab...): header injection")
        return value

    @field_validator("from_address")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        return None if value is None else check_sender(value)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            parse_schedule(value)  # malformed or never firing: a start-up error
        return value

    @field_validator("audience")
    @classmethod
    def _audience_keys(cls, value: AudienceFilter) -> AudienceFilter:
        for key in value:
            if not key or any(c in key for c in '"\\') or not key.isprintable():
                raise ValueError(f"attribute name {key!r}: no quotes, backslashes or controls")
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


def find_campaign(campaigns: dict[str, Campaign], name: str) -> Campaign:
    """The campaign called ``name``; an unknown name lists the configured ones."""
    try:
        return campaigns[name]
    except KeyError:
        known = ", ".join(sorted(campaigns)) or "none"
        raise ConfigError(f"unknown campaign {name!r} (configured: {known})") from None
