"""The Engine: settings, plugin manager, database, templates and registries in one object.

Everything that can be checked is checked when the engine starts, so a bad campaign file
fails the command that loads it, not a scheduled job at 3 a.m.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy.engine import Engine as SAEngine

from engine.audience.contexts import contexts_for
from engine.audience.eligibility import ineligible
from engine.audience.filters import check_audience_keys, count_audience, stream_audience
from engine.audience.forgetting_key import ensure_forgetting_key
from engine.campaigns import Campaign, find_campaign, load_campaigns
from engine.db import make_db
from engine.durations import format_duration
from engine.errors import ConfigError, PluginError, TailormailError, TemplateError
from engine.feedback.webhooks import WebhookHandler, configure_handlers
from engine.hookspecs import BackendFactory, ExecutorFactory, PolicyFactory, RecipeFactory
from engine.identifiers import SendRefs
from engine.plugins import make_plugin_manager
from engine.project_secret import load_project_secret
from engine.realmail import not_ready_message, real_mail_problems
from engine.registry import Registry, collect
from engine.rendering import Renderer, is_text_template
from engine.schedule_notice import warn_changed_schedules
from engine.settings import Settings, load_settings
from engine.tokens import Tokens
from engine.types import DeliveryBackend, Policy, Recipient


class Engine:
    """One tailormail installation: configuration, plugins, storage and rendering."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        project_dir: Path | None = None,
        plugins: Sequence[Any] = (),
        overrides: dict[str, Any] | None = None,
        load_entry_points: bool = True,
    ) -> None:
        self.settings = settings or load_settings(project_dir, overrides=overrides)
        self.load_entry_points = load_entry_points
        """Whether installed plugins were loaded (a shard worker process loads the same)."""
        self.pm = make_plugin_manager(
            plugins, self.settings.disabled_plugins, load_entry_points=load_entry_points
        )
        hook = self.pm.hook
        self.policies: Registry[PolicyFactory] = collect("policy", hook.register_policies)
        self.recipes: Registry[RecipeFactory] = collect("recipe", hook.register_recipes)
        self.backends: Registry[BackendFactory] = collect("backend", hook.register_backends)
        self.webhook_handlers: Registry[WebhookHandler] = collect(
            "webhook handler", hook.register_webhook_handlers
        )
        self.executors: Registry[ExecutorFactory] = collect("executor", hook.register_executors)
        self.campaigns: dict[str, Campaign] = load_campaigns(
            self.settings.path(self.settings.campaigns_dir)
        )
        # Never created silently for a database that holds sends (engine.project_secret).
        self.secrets = load_project_secret(self.settings)
        """The project's secrets: the current one and those a rotation kept accepted."""
        self.secret = self.secrets.current
        """The current project secret (``TAILORMAIL_SECRET`` or the secret file), read once."""
        self.tokens = Tokens(self.secret, self.secrets.previous)
        self.send_refs = SendRefs(self.secret)
        """Keyed references that stand for sends in headers and provider metadata."""
        self.renderer = Renderer(
            self.settings.path(self.settings.templates_dir),
            self.tokens,
            self.settings.tracking_base_url,
            self.pm,
        )
        self._validate()
        schedules = {name: campaign.schedule for name, campaign in self.campaigns.items()}
        warn_changed_schedules(self.settings.project_dir, schedules)
        self.db: SAEngine = make_db(self.settings.resolved_database_url)
        self.forgetting_key = ensure_forgetting_key(self.db, self.secret)
        """The database's own key of forgotten addresses' hashes (not the link secret)."""

    # -- start-up checks -------------------------------------------------------------
    def _validate(self) -> None:
        backend = self.settings.delivery.backend
        if backend not in self.backends:
            raise ConfigError(
                f"delivery.backend: unknown backend {backend!r} "
                f"(available: {', '.join(self.backends.names())})"
            )
        for name in self.settings.delivery.options:
            if name not in self.backends:
                raise ConfigError(f"delivery.{name}: no backend named {name!r} is installed")
        problems = real_mail_problems(self.settings, self.make_backend(), self.campaigns.values())
        if problems:  # make_backend above: unknown options fail there, naming the option
            raise ConfigError(not_ready_message(backend, problems))
        self._check_other_backend_options(backend)
        # [plugins.webhooks.<provider>] checked here; secrets only where served.
        configure_handlers(self)
        for key, name in (
            ("executor", self.settings.executor),
            ("workers.executor", self.settings.workers.executor),
        ):
            if name not in self.executors:
                raise ConfigError(
                    f"{key}: unknown executor {name!r} "
                    f"(available: {', '.join(self.executors.names())})"
                )
        templates = self.settings.path(self.settings.templates_dir)
        self._check_retention()
        for campaign in self.campaigns.values():
            where = f"campaign {campaign.name!r}"
            for key, table, registry, name, params in self._plugin_tables(campaign):
                try:
                    factory = registry.get(name)
                    check = getattr(factory, "check_params", None)
                    # A factory that can check its parameters without building (a vw
                    # policy needs Vowpal Wabbit for that) keeps start-up light.
                    (check if callable(check) else factory)(**params)
                except PluginError as exc:
                    raise ConfigError(f"{where}: {key}: {exc}") from exc
                except (TypeError, ValueError, TailormailError) as exc:
                    raise ConfigError(f"{where}: {table}: {exc}") from exc
            for variant in campaign.variants:
                self._check_template(where, variant.key, variant.template, templates)
                try:
                    self.renderer.compile(variant.as_variant())
                except TemplateError as exc:
                    raise ConfigError(f"{where}: {exc}") from exc

    def _plugin_tables(
        self, campaign: Campaign
    ) -> list[tuple[str, str, Registry[Any], str, dict[str, Any]]]:
        """The campaign's plugin tables, each as ``(key, table, registry, name, params)``:
        its policy, its recipe and its baseline's policy, checked here (a factory's
        ``check_params(**params)`` when it has one, else built once)."""
        tables: list[tuple[str, str, Registry[Any], str, dict[str, Any]]] = [
            (
                "policy.name",
                f"[policy] {campaign.policy.name}",
                self.policies,
                campaign.policy.name,
                dict(campaign.policy.params),
            ),
            (
                "recipe.name",
                f"[recipe] {campaign.recipe.name}",
                self.recipes,
                campaign.recipe.name,
                dict(campaign.recipe.params),
            ),
        ]
        if campaign.baseline is not None:
            baseline = campaign.baseline
            tables.append(
                (
                    "baseline.policy",
                    "[baseline]",
                    self.policies,
                    baseline.policy_name,
                    baseline.policy_params,
                )
            )
        return tables

    def _check_retention(self) -> None:
        """Anonymized rows can neither earn rewards nor count for a frequency cap, so the
        retention must outlast every attribution window and every cap."""
        if self.settings.retention is not None:
            self.check_outlasts("retention", self.settings.retention, "erased")

    def check_outlasts(self, name: str, period: timedelta, fate: str) -> None:
        """Raise ``ConfigError`` unless ``period`` (the age from which ledger rows are
        ``fate``: erased, archived) is longer than every attribution window and every
        frequency cap, which need the rows that young."""
        needs = [("frequency_cap", self.settings.frequency_cap)]
        for campaign in self.campaigns.values():
            where = f"campaign {campaign.name!r}"
            needs.append(
                (f"{where}: reward.attribution_window", campaign.reward.attribution_window)
            )
            needs.append((f"{where}: frequency_cap", campaign.frequency_cap))
        for need, needed in needs:
            if needed is not None and period <= needed:
                raise ConfigError(
                    f"{name}: {format_duration(period)} must be longer than {need} "
                    f"({format_duration(needed)}), or the rows it needs would be {fate}"
                )

    @staticmethod
    def _check_template(where: str, key: str, template: str, templates: Path) -> None:
        """A body template is an HTML file inside ``templates_dir``."""
        path = PurePosixPath(template)
        prefix = f"{where}: variant {key!r}: template {template!r}"
        if path.is_absolute() or ".." in path.parts or "\\" in template:
            raise ConfigError(
                f"{prefix} is outside templates_dir ({templates}); name it "
                "relative to that directory, without '..'"
            )
        if is_text_template(template):
            raise ConfigError(
                f"{prefix} is a text part's name; the body template is HTML "
                f"(its text part is found beside it, see docs/guide.md)"
            )
        if not (templates / template).is_file():
            raise ConfigError(f"{prefix} not found in {templates}")

    def _check_other_backend_options(self, selected: str) -> None:
        """Tables of backends not in use yet are checked too, by those that can check them.

        A backend factory with a ``check_options(options)`` callable validates a table
        without building the backend (no keys needed yet), so a typo in ``[delivery.ses]``
        fails today, not the day someone switches to SES.
        """
        for name, options in self.settings.delivery.options.items():
            check = getattr(self.backends.get(name), "check_options", None)
            if name != selected and callable(check):
                try:
                    check(options)
                except ConfigError as exc:
                    raise ConfigError(f"{exc}{self._set_by(name)}") from exc

    def _set_by(self, backend: str) -> str:
        """`` (set by TAILORMAIL_...)`` when the environment set the backend's options."""
        # The mistake may be in the environment, not in the file.
        variables = self.settings.env_variables(f"delivery.options.{backend}")
        return f" (set by {', '.join(variables)})" if variables else ""

    def serve_webhooks(self) -> None:
        """Load every provider webhook's secret; call it where the webhooks are served.

        A missing secret is then a ``ConfigError`` naming its variable (other commands
        start without it, their handlers disabled).
        """
        configure_handlers(self, served=True)

    # -- factories ----------------------------------------------------------------------
    def campaign(self, name: str) -> Campaign:
        """The named campaign; an unknown name lists the configured ones."""
        return find_campaign(self.campaigns, name)

    def make_backend(self, name: str | None = None) -> DeliveryBackend:
        """A new delivery backend configured from ``[delivery.<name>]``."""
        name = name or self.settings.delivery.backend
        options = self.settings.delivery.options.get(name, {})
        try:
            return self.backends.get(name)(self, **options)
        except (TypeError, ConfigError) as exc:
            message = str(exc) if isinstance(exc, ConfigError) else f"delivery.{name}: {exc}"
            raise ConfigError(message + self._set_by(name)) from exc

    def make_policy(self, campaign: Campaign, version: str | None = None) -> Policy:
        """The campaign's policy as it decides now: its champion model, with the settings
        that model was trained with, or a fresh policy when there is none yet.

        With ``version`` (what a run pinned when it started), that model: every worker of
        a run decides with the same one, whatever is promoted meanwhile (``""`` pins the
        fresh policy of a campaign that had no model yet). A shorthand for
        ``engine.learning.champions.deciding_policy`` with this engine's database and
        policies.
        """
        # lazy: constructing an Engine imports no engine.learning (only a run that decides)
        from engine.learning.champions import deciding_policy

        return deciding_policy(self.db, self.policies, campaign, version)

    def champion_version(self, campaign: Campaign) -> str:
        """The version a run starting now decides with (``""``: no model yet); a shorthand
        for ``engine.learning.champions.champion_version`` with this engine's database."""
        # lazy: constructing an Engine imports no engine.learning (only a run that decides)
        from engine.learning.champions import champion_version

        return champion_version(self.db, campaign)

    def executor(self, name: str = "inline", **options: Any) -> Any:
        """A new executor (``concurrent.futures`` style) for rendering and delivery."""
        return self.executors.get(name)(**options)

    # -- recipients ---------------------------------------------------------------------
    def audience(self, campaign: Campaign) -> list[Recipient]:
        """Every recipient matching the campaign's audience filter, ordered by id.

        For small lists (tests, previews); a run reads ``audience_pages`` instead.
        """
        return [r for page in self.audience_pages(campaign) for r in page]

    def audience_pages(
        self,
        campaign: Campaign,
        page_size: int = 1000,
        ids: Sequence[str] | None = None,
        bounds: tuple[str, str | None] = ("", None),
    ) -> Iterator[list[Recipient]]:
        """The campaign's audience streamed from the database, filtered there, by id order.

        With ``ids``, only those recipients, when they are still in the audience; with
        ``bounds`` (after, until], one shard's range of ids.
        """
        return stream_audience(self.db, campaign.audience, page_size, ids, bounds)

    def audience_size(self, campaign: Campaign) -> int:
        """How many recipients the campaign's audience filter selects."""
        return count_audience(self.db, campaign.audience)

    def check_audience(self, campaign: Campaign) -> None:
        """Stop a run whose audience filter names an attribute no recipient has."""
        check_audience_keys(self.db, campaign.audience, f"campaign {campaign.name!r}")

    def ineligible(self, campaign: Campaign, recipients: Sequence[Recipient]) -> dict[str, str]:
        """The recipients of ``recipients`` to skip in a run of ``campaign``, with the reason:
        the core's compliance checks, then the eligibility hooks
        (``engine.audience.eligibility.ineligible``)."""
        return ineligible(self, campaign, recipients)

    def contexts_for(
        self, campaign: Campaign, recipients: Sequence[Recipient]
    ) -> dict[str, dict[str, Any]]:
        """The policy's context per recipient id: every features answer merged
        (``engine.audience.contexts.contexts_for``)."""
        return contexts_for(self, campaign, recipients)

    def context_for(self, campaign: Campaign, recipient: Recipient) -> dict[str, Any]:
        """The policy's context for one recipient (see ``contexts_for``)."""
        return contexts_for(self, campaign, [recipient])[recipient.recipient_id]

    def plugin_options(self, plugin: str) -> dict[str, Any]:
        """The ``[plugins.<plugin>]`` table of the settings (empty when absent)."""
        return dict(self.settings.plugins.get(plugin, {}))

    def close(self) -> None:
        """Release the database connections."""
        self.db.dispose()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
