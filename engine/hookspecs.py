"""Every hook tailormail calls. The signature is the contract; the docstring its semantics.

Registration hooks take a ``register`` callback; the work lives on the registered object,
because pluggy is synchronous (an ``async def`` implementation would return an un-awaited
coroutine). Hooks not marked ``firstresult`` collect every non-None answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import jinja2

    from engine.app import Engine
    from engine.campaigns import Campaign
    from engine.feedback.webhooks import WebhookHandler
    from engine.types import (
        DeliveryBackend,
        Item,
        Message,
        Policy,
        Recipe,
        Recipient,
        SendResult,
        TrackingEvent,
        Variant,
    )

PROJECT = "tailormail"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

PolicyFactory = Callable[..., "Policy"]
RecipeFactory = Callable[..., "Recipe"]
BackendFactory = Callable[..., "DeliveryBackend"]
ExecutorFactory = Callable[..., Any]
CommandTarget = Callable[..., Any] | str
"""A command: a Typer command function (or a ``typer.Typer`` group), or the
``"package.module:attribute"`` naming one, imported only when that command runs."""
CommandRegister = Callable[[str, CommandTarget], None]


@hookspec
def register_policies(register: Callable[[str, PolicyFactory], None]) -> None:
    """Register policies: ``register(name, factory)``.

    Called once when the engine builds its registries. ``factory(**params)`` returns a fresh
    ``Policy``; ``params`` come from a campaign's ``[policy]`` table. A name registered twice
    is an error naming both plugins.
    """


@hookspec
def register_recipes(register: Callable[[str, RecipeFactory], None]) -> None:
    """Register recommendation recipes: ``register(name, factory)``.

    ``factory(**params)`` returns an unfitted ``Recipe``; ``params`` come from a campaign's
    ``[recipe]`` table.
    """


@hookspec
def register_backends(register: Callable[[str, BackendFactory], None]) -> None:
    """Register delivery backends: ``register(name, factory)``.

    ``factory(engine, **options)`` returns a ``DeliveryBackend``; ``options`` come from the
    ``[delivery.<name>]`` table of the settings.
    """


@hookspec
def register_webhook_handlers(register: Callable[[str, WebhookHandler], None]) -> None:
    """Register provider webhook handlers: ``register(provider, handler)``.

    The web app serves each at ``POST /webhooks/{provider}``; the handler verifies the request
    and turns it into ``TrackingEvent`` objects.
    """


@hookspec
def register_executors(register: Callable[[str, ExecutorFactory], None]) -> None:
    """Register run executors: ``register(name, factory)``.

    ``factory(**options)`` returns a ``concurrent.futures.Executor``-like object used to
    render and deliver the batches of a campaign run.
    """


@hookspec
def register_commands(register: CommandRegister) -> None:
    """Register CLI commands: ``register(name, command)``; the built-in commands come this
    way too (``engine.cli.builtin``), registered first, so a plugin's command of the same
    name replaces a built-in one.

    ``command`` is a Typer command function (its parameters become options and arguments,
    its docstring the help), a ``typer.Typer`` (a command group), or the dotted path
    ``"package.module:attribute"`` of either: a path is imported only when its command runs
    or ``--help`` lists the commands, which keeps ``tailormail`` quick to start. Called
    when the command line starts, with the installed plugins (not a project's settings).
    """


@hookspec
def recipient_features(
    engine: Engine, campaign: Campaign, recipient: Recipient
) -> dict[str, Any] | None:
    """Return context features for the policy's decision about ``recipient``.

    Every implementation's dict is merged into the context (later plugins win on a clash).
    str values are categorical, int/float numeric, nested dicts feature namespaces.
    """


@hookspec
def recipient_features_batch(
    engine: Engine, campaign: Campaign, recipients: Sequence[Recipient]
) -> dict[str, dict[str, Any]] | None:
    """Return context features for a whole batch: ``{recipient_id: features}``.

    The batch form of ``recipient_features``, called once per batch of a run with the
    eligible recipients, so a plugin can answer with one query instead of one per person.
    A recipient missing from an answer gets nothing from it. Merged like
    ``recipient_features`` (later plugins win on a clash); the per-recipient answers are
    merged after the batch answers, so they win over them.
    """


@hookspec
def extra_template_vars(
    engine: Engine, campaign: Campaign, recipient: Recipient, variant: Variant
) -> dict[str, Any] | None:
    """Return extra variables for the templates; every answer is merged into the context."""


@hookspec
def prepare_jinja2_environment(env: jinja2.Environment) -> None:
    """Modify the sandboxed Jinja2 environment (filters, globals) once, when it is built."""


@hookspec
def filter_items(
    engine: Engine, campaign: Campaign, user_id: str, items: list[Item]
) -> Iterable[str] | None:
    """Return the ids of the ``items`` that ``user_id`` must not be shown in ``campaign``.

    Called with a recipe's candidates for one recipient, after the campaign's own
    ``[filters]`` and before the top-k cut; every answer's ids are dropped and the recipe
    is asked for more, so the email still gets its items while eligible ones remain.
    """


@hookspec(firstresult=True)
def eligible(engine: Engine, campaign: Campaign, recipient: Recipient) -> str | None:
    """Return a reason (a short string) to skip ``recipient`` in this run, or None.

    Runs before any decision is logged; the first reason wins and is written to the ledger
    row with no decision, so skips never bias the logged probabilities.
    """


@hookspec
def eligible_batch(
    engine: Engine, campaign: Campaign, recipients: Sequence[Recipient]
) -> dict[str, str] | None:
    """Return ``{recipient_id: reason}`` for the recipients of one batch to skip in this run.

    The batch form of ``eligible``, called once per batch before any decision is logged;
    recipients absent from every answer go on. Every answer is collected; when several
    name one recipient, the first plugin's reason wins (``tryfirst`` plugins answer
    first). ``eligible`` is then asked about the recipients no batch answer skipped.
    """


@hookspec
def prepare_message(engine: Engine, campaign: Campaign, message: Message) -> None:
    """Modify a rendered message (headers, metadata) just before it is handed to delivery.

    The ledger row already exists; the message's ``send_id`` names it.
    """


@hookspec
def message_sent(engine: Engine, message: Message, result: SendResult) -> None:
    """Observe a delivery outcome, after the ledger row has been updated."""


@hookspec
def tracking_event(engine: Engine, event: TrackingEvent) -> None:
    """Observe a tracking or provider event, after it has been stored."""


@hookspec(firstresult=True)
def reward(engine: Engine, campaign: Campaign, events: list[TrackingEvent]) -> float | None:
    """Return the reward of one decision given the events attributed to its send.

    Called when the attribution window has closed; ``events`` may be empty. The first
    non-None answer wins; the built-in weighted reward is ``trylast``.
    """
