"""A real run composed: the one place a ``CampaignRun`` gets the effects that change the world.

Every real path builds its run here: ``tailormail send``, the scheduler's tick and its
retry job, and a worker's shard (its ``ShardHost`` carries ``real_run``). The run
itself (``engine.sending.pipeline``) has no default effects and never builds them, and a
rehearsal (``engine.sending.rehearsal``) builds its run with in-memory ones instead, so
nothing a rehearsal runs can reach the ledger, the backend or a worker.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from engine.errors import ConfigError
from engine.ledger import RunLedger
from engine.sending.pipeline import CampaignRun, Progress, RunSummary, run_id_for
from engine.sending.run_effects import RunEffects
from engine.sending.runs import manual_run_id
from engine.sending.shards import run_shards
from engine.types import Message, SendResult

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.campaigns import Campaign


def real_shards(
    run: CampaignRun, progress: Progress | None, shard_progress: Progress | None = None
) -> None:
    """A real run's shard runner: its shards on the configured workers, each built there
    by ``real_run``."""
    run_shards(run, progress, shard_progress, real_run)


def real_effects(engine: Engine, run_id: str, campaign: str) -> RunEffects:
    """The effects of a real run: the database ledger, the configured backend, shards on
    the configured workers, and the ``message_sent`` hook."""

    def sent(message: Message, result: SendResult) -> None:
        engine.pm.hook.message_sent(engine=engine, message=message, result=result)

    return RunEffects(
        ledger=RunLedger(engine, run_id, campaign),
        backend=engine.make_backend,
        shards=real_shards,
        sent=sent,
        shares_recipe_fit=True,
    )


def real_run(
    engine: Engine,
    campaign: Campaign,
    run_id: str,
    *,
    include_new: bool | None = None,
    retry_failed: bool = True,
) -> CampaignRun:
    """Run ``run_id`` of ``campaign`` with the real effects (``real_effects``); the options
    are ``CampaignRun``'s."""
    effects = real_effects(engine, run_id, campaign.name)
    return CampaignRun(
        engine, campaign, run_id, effects, include_new=include_new, retry_failed=retry_failed
    )


def run_campaign(
    engine: Engine,
    name: str,
    *,
    run_id: str | None = None,
    scheduled_for: datetime | None = None,
    progress: Progress | None = None,
    shard_progress: Progress | None = None,
    include_new: bool | None = None,
    retry_failed: bool = True,
) -> RunSummary:
    """Run campaign ``name`` as run ``run_id`` (created, or resumed when it exists).

    Without ``run_id`` a scheduled tick's id comes from ``scheduled_for``, and a send by
    hand gets a fresh unique id (``engine.sending.runs.manual_run_id``). Resuming retries the
    deferred rows and (``retry_failed``) those that failed for a fixable cause; it sends
    to audience members without a row only if the run had not finished, or with
    ``include_new``.
    """
    campaign = engine.campaign(name)
    if campaign.triggered:
        raise ConfigError(
            f"campaign {name!r} is triggered by the API ([trigger]), not sent as a run: "
            f"trigger it with POST /v1/campaigns/{name}/trigger (docs/api.md)"
        )
    if run_id is None:
        run_id = run_id_for(campaign.name, scheduled_for) if scheduled_for else manual_run_id(name)
    run = real_run(engine, campaign, run_id, include_new=include_new, retry_failed=retry_failed)
    return run.execute(scheduled_for, progress, shard_progress)
