"""Typed settings from ``config/tailormail.toml`` plus ``TAILORMAIL_*`` environment variables.

Unknown keys are errors that name the key. Secrets come from the environment (or a file
outside version control) and are masked in ``repr``.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
)

from engine.addresses import check_sender
from engine.durations import duration_field, format_duration
from engine.errors import ConfigError
from engine.schedules import check_timezone
from engine.secret import checked_env_secret, previous_env_secrets, read_secret_file

CONFIG_FILE = Path("config") / "tailormail.toml"
ENV_PREFIX = "TAILORMAIL_"
# Environment variables with the prefix that are not settings.
RESERVED_ENV = {"TAILORMAIL_SECRET", "TAILORMAIL_SECRET_PREVIOUS", "TAILORMAIL_PROJECT"}
RESERVED_ENV_PREFIXES = ("TAILORMAIL_TEST_",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DeliverySettings(_Strict):
    """Which backend delivers, and each backend's options (``[delivery.<name>]``)."""

    backend: str = "outbox"
    batch_size: int = Field(default=100, ge=1)
    # How long a worker's claim on its ledger rows lasts unless renewed (every third of it);
    # a dead worker's rows are taken over after it (at once on the same host).
    lease_seconds: int = Field(default=60, ge=3)
    # Each sending worker's hand-over journal (about 1 MB at most, deleted when it stops).
    journal_dir: str = "journal"
    # A backend that reaches other machines refuses loopback links and example.com senders
    # (engine/realmail.py) unless this says so on purpose: a staging setup.
    allow_test_addresses: bool = False
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)


class WebSettings(_Strict):
    """Where ``tailormail serve`` listens, what a one-click unsubscribe stops, and what any
    one client may take from the tracking server (docs/security.md)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8025, ge=0, le=65535)
    # RFC 8058 one-click (the mailbox's own button) offers no choice: "all" stops every
    # campaign, "campaign" only the one the email came from. See docs/guide.md.
    unsubscribe_scope: Literal["all", "campaign"] = "all"
    # Peers whose X-Forwarded-For names the client (addresses or networks, "10.0.0.0/8").
    trusted_proxies: list[str] = Field(default_factory=list)
    # Open connections in all, and from one client (an IPv6 client is its /64).
    max_connections: int = Field(default=4096, ge=16)
    max_connections_per_client: int = Field(default=64, ge=1)
    # A request's head must arrive within this of the connection opening (or of the
    # previous answer on a kept-alive connection), its body within body_timeout_seconds.
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    max_webhook_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    # Bytes of webhook bodies held in memory by all requests at once (503 beyond).
    max_buffered_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Per client: opens, clicks, unsubscribe POSTs and webhooks (a token bucket).
    rate_limit_per_second: float = Field(default=20.0, gt=0)
    rate_limit_burst: int = Field(default=200, ge=1)
    # One stored open or click per token within this window; repeats are counted only.
    dedupe_window_seconds: float = Field(default=60.0, ge=0)
    # /metrics (Prometheus) answers only with this bearer token; unset: not served.
    metrics_token: SecretStr | None = None

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return value


class ApiWebhookSettings(_Strict):
    """``[api.webhooks]``: the status webhooks tailormail sends to subscribers' URLs (an
    outbound boundary, docs/security.md)."""

    # Private, loopback, link-local (cloud metadata) targets are refused unless allowed.
    allow_private: bool = False
    allow_http: bool = False  # https only, unless allowed
    max_attempts: int = Field(default=10, ge=1, le=30)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    dispatch_interval_seconds: float = Field(default=2.0, gt=0)


class ApiSettings(_Strict):
    """``[api]``: the HTTP API for triggered alerts (docs/api.md).

    It listens on its own port (``tailormail api``, or beside ``serve``): its load never
    shares an event loop with click redirects. ``mode = "same_port"`` serves it from the
    tracking server instead; ``"off"`` does not serve it.
    """

    mode: Literal["own_port", "same_port", "off"] = "own_port"
    host: str = "127.0.0.1"
    port: int = Field(default=8026, ge=0, le=65535)
    # Per API key: requests a second, and the burst a key may spend at once (429 beyond).
    rate_limit_per_second: float = Field(default=100.0, gt=0)
    rate_limit_burst: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)  # a batch of 1,000
    # A verified key is trusted this long before the database is asked again: a revoked
    # key stops working within it (0: every request asks).
    key_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    # Threads deciding and committing rounds of triggers (each holds a connection).
    workers: int = Field(default=2, ge=1, le=16)
    # How long an Idempotency-Key and its stored answer are kept (then deleted).
    idempotency_retention: timedelta = timedelta(hours=24)
    # How long trigger payloads are kept once their alert is done (then deleted).
    trigger_retention: timedelta = timedelta(days=30)
    release_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    webhooks: ApiWebhookSettings = Field(default_factory=ApiWebhookSettings)

    @field_validator("idempotency_retention", "trigger_retention", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return duration_field(value)

    @field_serializer("idempotency_retention", "trigger_retention", when_used="json")
    def _duration_json(self, value: timedelta) -> str:
        return format_duration(value)


class SchedulerSettings(_Strict):
    """APScheduler wiring; misfire and coalesce are explicit, never library defaults."""

    reward_interval_seconds: int = Field(default=300, ge=1)
    retry_interval_seconds: int = Field(default=900, ge=1)
    train_interval_seconds: int = Field(default=7 * 24 * 3600, ge=1)  # challengers, weekly
    # How often the leader sends triggered alerts that came due (an API process sends
    # its own at once, and checks every [api] release_interval_seconds).
    release_interval_seconds: int = Field(default=5, ge=1)
    misfire_grace_seconds: int = Field(default=3600, ge=1)
    coalesce: bool = True
    timezone: str = "UTC"
    # How long a dead leader's lease blocks a standby ``serve`` (SQLite; PostgreSQL's
    # advisory lock is released when the leader's connection closes).
    leader_ttl_seconds: float = Field(default=15.0, gt=0)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_timezone(value)  # every command refuses a misspelled zone at start-up


class CelerySettings(_Strict):
    """The Celery executor: broker, result backend, queue (``tailormail worker`` reads it)."""

    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str = "redis://127.0.0.1:6379/1"
    queue: str = "tailormail"
    # An unacknowledged shard of a worker that died goes to another after this long.
    visibility_timeout_seconds: int = Field(default=300, ge=1)


class WorkersSettings(_Strict):
    """Where the shards of a large run are sent: ``inline`` (this process, no shards),
    ``local`` (a process pool on this machine) or ``celery`` (``tailormail worker``s)."""

    executor: str = "inline"
    processes: int = Field(default=0, ge=0)  # local pool size; 0: one per core
    shard_size: int = Field(default=5000, ge=1)  # recipients per shard
    # The coordinator stops waiting for shards after this long without ledger progress
    # and sends what is left itself (a late shard then finds it done).
    stall_seconds: float = Field(default=120.0, gt=0)
    celery: CelerySettings = Field(default_factory=CelerySettings)


class Settings(_Strict):
    """Everything an ``Engine`` needs to start; paths are relative to ``project_dir``."""

    project_dir: Path = Field(default_factory=Path.cwd)
    database_url: str = "sqlite:///tailormail.db"
    tracking_base_url: str = "http://127.0.0.1:8025"
    from_address: str = "alerts@tailormail.invalid"
    templates_dir: str = "templates"
    campaigns_dir: str = "config/campaigns"
    secret: SecretStr | None = None
    # Earlier secrets still accepted for links (TAILORMAIL_SECRET_PREVIOUS; see engine.secret).
    secret_previous: list[SecretStr] = Field(default_factory=list)
    secret_file: str = ".tailormail-secret"
    spool_dir: str = "spool"  # the tracking server's local event logs
    disabled_plugins: list[str] = Field(default_factory=list)
    executor: str = "inline"
    executor_options: dict[str, Any] = Field(default_factory=dict)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    web: WebSettings = Field(default_factory=WebSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    workers: WorkersSettings = Field(default_factory=WorkersSettings)
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)
    frequency_cap: timedelta | None = None  # across all campaigns; each campaign has its own
    # Ledger rows and events older than this are anonymized by a daily job (docs/guide.md).
    retention: timedelta | None = None
    _env_sources: dict[str, str] = PrivateAttr(default_factory=dict)

    def env_variables(self, prefix: str) -> list[str]:
        """The ``TAILORMAIL_*`` variables that set ``prefix`` or a key under it."""
        return sorted(
            name
            for key, name in self._env_sources.items()
            if key == prefix or key.startswith(prefix + ".")
        )

    @field_validator("frequency_cap", "retention", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return duration_field(value)

    @field_serializer("frequency_cap", "retention", when_used="json")
    def _duration_json(self, value: timedelta | None) -> str | None:
        # The settings' own spelling ("1d"), not pydantic's ISO 8601 ("P1D"), which the
        # validator above does not read: settings dumped as JSON (a shard's payload for
        # its worker) load back as they were.
        return None if value is None else format_duration(value)

    @field_validator("tracking_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an absolute http:// or https:// URL")
        if parts.query or parts.fragment or any(c.isspace() for c in value):
            raise ValueError(f"{value!r} must have no query, fragment or spaces")
        return value.rstrip("/")

    @field_validator("from_address")
    @classmethod
    def _sender(cls, value: str) -> str:
        return check_sender(value)

    def path(self, relative: str | Path) -> Path:
        """Resolve a configured path against the project directory."""
        candidate = Path(relative)
        return candidate if candidate.is_absolute() else self.project_dir / candidate

    @property
    def resolved_database_url(self) -> str:
        """The database URL with a relative SQLite path made absolute."""
        prefix = "sqlite:///"
        url = self.database_url
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str(self.path(url[len(prefix) :]))
        return url

    def secret_bytes(self) -> bytes:
        """The signing secret: ``TAILORMAIL_SECRET``, else the secret file (created once).

        Low level: it creates a missing file whatever the database holds. The Engine loads
        its secrets with ``engine.project_secret.load_project_secret``, which never does.
        """
        if self.secret is not None:
            return self.secret.get_secret_value().encode()
        return read_secret_file(self.path(self.secret_file))


def _set_nested(target: dict[str, Any], dotted: list[str], value: Any) -> None:
    for part in dotted[:-1]:
        target = target.setdefault(part, {})
    target[dotted[-1]] = value


def _typed(raw: str) -> Any:
    """An environment value typed as TOML would type it: ``false``, ``25``, ``1.5``,
    ``["a", "b"]``; anything else (dates included) stays the string it is."""
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
    return value if isinstance(value, bool | int | float | list) else raw


def _declared(path: list[str]) -> bool:
    """True when ``path`` names a typed settings field (pydantic converts the string);
    False inside free-form tables (backend options, plugin options), where nothing would."""
    model: type[BaseModel] = Settings
    for part in path:
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        return not str(annotation).startswith("dict")
    return False


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """``TAILORMAIL_DELIVERY__BACKEND=smtp`` becomes ``{"delivery": {"backend": "smtp"}}``.

    Also returns which variable set each dotted key, so an error can name the variable.
    Values are typed like TOML values, so a backend's or plugin's options (free-form
    tables) get ``false`` as a boolean, not as a non-empty string.
    """
    found: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV:
            continue
        if name.startswith(RESERVED_ENV_PREFIXES):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        value: Any = raw if _declared(path) else _typed(raw)
        if path == ["disabled_plugins"]:
            value = [p.strip() for p in raw.split(",") if p.strip()]
        _set_nested(found, path, value)
        if path[0] == "delivery" and len(path) > 2 and path[1] not in DeliverySettings.model_fields:
            path = ["delivery", "options", *path[1:]]  # where _lift_backend_tables puts it
        sources[".".join(path)] = name
    return found, sources


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _lift_backend_tables(data: dict[str, Any]) -> dict[str, Any]:
    """``[delivery.smtp]`` tables become ``delivery.options["smtp"]``."""
    delivery = data.get("delivery")
    if isinstance(delivery, dict):
        known = set(DeliverySettings.model_fields)
        options = dict(delivery.get("options", {}))
        for key in list(delivery):
            if key not in known and isinstance(delivery[key], dict):
                options[key] = delivery.pop(key)
        if options:
            delivery["options"] = options
    return data


def _env_source(key: str, env_sources: Mapping[str, str]) -> str | None:
    """The environment variable that set ``key`` (or a table holding it), if any."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        found = env_sources.get(".".join(parts[:end]))
        if found:
            return found
    return None


def format_validation_error(
    source: str, error: ValidationError, env_sources: Mapping[str, str] | None = None
) -> str:
    """One line per problem, each naming the dotted key and what is wrong with it.

    A key set by an environment variable names that variable instead of ``source``.
    """
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        where = _env_source(key, env_sources or {}) or source
        if problem["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key '{key}'")
        else:
            reason = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: invalid value for '{key}': {reason}")
    return "\n".join(lines)


def find_project_dir(start: Path | None = None) -> Path | None:
    """The nearest directory at or above ``start`` holding ``config/tailormail.toml``."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    return None


def load_settings(
    project_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the project's TOML, then env overrides, then explicit ``overrides``.

    With no ``config/tailormail.toml`` the embedded defaults apply (SQLite, local outbox).
    """
    environ = os.environ if environ is None else environ
    if project_dir is None and environ.get("TAILORMAIL_PROJECT"):
        project_dir = Path(environ["TAILORMAIL_PROJECT"])
    if project_dir is None:
        project_dir = find_project_dir() or Path.cwd()
    project_dir = project_dir.resolve()
    config_path = project_dir / CONFIG_FILE
    data: dict[str, Any] = {}
    if config_path.is_file():
        try:
            data = tomllib.loads(config_path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path}: not valid TOML: {exc}") from exc
    if "secret_previous" in data:
        raise ConfigError(
            f"{config_path}: key 'secret_previous' must not hold secrets; set "
            "TAILORMAIL_SECRET_PREVIOUS, or keep them as further lines of the secret file"
        )
    from_env, env_sources = _env_overrides(environ)
    data = _merge(_lift_backend_tables(data), _lift_backend_tables(from_env))
    if overrides:
        data = _merge(data, _lift_backend_tables(dict(overrides)))
    data["project_dir"] = project_dir
    if "TAILORMAIL_SECRET" in environ:
        data["secret"] = checked_env_secret(environ["TAILORMAIL_SECRET"]).decode()
    elif "secret" in data:
        raise ConfigError(
            f"{config_path}: key 'secret' must not hold a secret; set TAILORMAIL_SECRET "
            "in the environment (or leave it unset to use the secret file)"
        )
    if environ.get("TAILORMAIL_SECRET_PREVIOUS"):
        data["secret_previous"] = [
            s.decode() for s in previous_env_secrets(environ["TAILORMAIL_SECRET_PREVIOUS"])
        ]
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(config_path), exc, env_sources)) from exc
    settings._env_sources = env_sources
    return settings
