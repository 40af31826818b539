"""APScheduler wiring: a cron job per scheduled campaign, the periodic reward join, the
retry of deferred sends and (with ``retention`` set) the retention job.

Misfire grace, coalescing and ``max_instances=1`` are set explicitly. A campaign job names
its run after the cron tick it belongs to, so a tick fired twice resumes the same run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import func
from sqlmodel import col, select

from engine.audience.forgetting import apply_retention
from engine.campaigns import cron_trigger
from engine.db import session_scope
from engine.errors import CampaignBusyError
from engine.feedback.outbound import OutboundPolicy
from engine.feedback.reward_job import join_rewards
from engine.feedback.rewards import RewardJoinSummary
from engine.feedback.status_webhooks import dispatch_due
from engine.learning.challengers import train_challengers
from engine.models import LedgerRow, LedgerStatus, RunRow, utcnow
from engine.sending.api_retention import purge_api_data
from engine.sending.leader import Leadership
from engine.sending.pipeline import RunSummary, run_id_for
from engine.sending.real_run import run_campaign
from engine.sending.release import Releaser

if TYPE_CHECKING:
    from engine.app import Engine

log = logging.getLogger(__name__)


def latest_tick(trigger: BaseTrigger, now: datetime, lookback: timedelta) -> datetime | None:
    """The last fire time of ``trigger`` at or before ``now`` (within ``lookback``)."""
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    tick: datetime | None = trigger.get_next_fire_time(None, now - lookback)
    last: datetime | None = None
    while tick is not None and tick <= now:
        last = tick
        tick = trigger.get_next_fire_time(tick, tick + timedelta(microseconds=1))
    return last


def run_scheduled(engine: Engine, name: str, now: datetime | None = None) -> RunSummary | None:
    """The campaign job: run the tick that is due (or resume it if it already ran)."""
    campaign = engine.campaign(name)
    if campaign.schedule is None:
        return None
    trigger = cron_trigger(campaign.schedule, engine.settings.scheduler.timezone)
    grace = timedelta(seconds=engine.settings.scheduler.misfire_grace_seconds)
    tick = latest_tick(trigger, now or utcnow(), grace)
    if tick is None:
        log.warning("campaign %s fired with no tick in the last %s; skipped", name, grace)
        return None
    log.info("campaign %s: tick %s starts run %s", name, tick, run_id_for(name, tick))
    try:
        summary = run_campaign(engine, name, run_id=run_id_for(name, tick), scheduled_for=tick)
    except CampaignBusyError as exc:  # the last tick's run is still sending
        log.warning("campaign %s: tick %s skipped: %s", name, tick, exc)
        return None
    if summary.empty:  # not a failed run: the tick had nobody to mail
        log.warning("campaign %s run %s sent nothing: %s", name, summary.run_id, summary.empty)
    log.info("campaign %s run %s: %s sent", name, summary.run_id, summary.sent)
    return summary


def retry_deferred(engine: Engine) -> list[RunSummary]:
    """Resume every run that has deferred rows (temporary failures), oldest first.

    Resuming retries exactly those rows with their logged decisions; nobody else is sent
    (not the audience members who joined since, nor rows that failed for a fixable cause:
    those wait for a resume by hand once the cause is fixed).
    """
    with session_scope(engine.db) as session:
        stmt = (
            select(col(LedgerRow.run_id), col(LedgerRow.campaign))
            .where(col(LedgerRow.status) == LedgerStatus.DEFERRED)
            .where(col(LedgerRow.trigger_id) == "")  # a trigger run's: its releaser retries
            .group_by(col(LedgerRow.run_id), col(LedgerRow.campaign))
            .order_by(func.min(col(LedgerRow.id)))
        )
        runs = [(str(run), str(name)) for run, name in session.execute(stmt).all()]
    summaries = []
    for run_id, name in runs:
        if name not in engine.campaigns:
            log.warning("run %s has deferred rows but campaign %s is gone", run_id, name)
            continue
        try:
            retry = run_campaign(engine, name, run_id=run_id, include_new=False, retry_failed=False)
            summaries.append(retry)
        except CampaignBusyError as exc:  # retried on a later pass, once that run is done
            log.info("run %s keeps its deferred rows for now: %s", run_id, exc)
    return summaries


def reward_job(engine: Engine) -> RewardJoinSummary:
    """The periodic reward job: replay orphaned intake logs, join rewards, learn online
    (composed in ``engine.feedback.reward_job``)."""
    summary = join_rewards(engine)
    log.info("reward join: %s", summary.rewarded)
    return summary


RETENTION_INTERVAL_SECONDS = 3600
"""How often the retention job anonymizes what has grown older than ``retention``
(hourly: a server restarted every day still runs it)."""


def dispatch_status_webhooks(engine: Engine) -> int:
    """Post the status webhooks that are due (an API process posts them too: each
    delivery goes once, under whichever dispatcher leased it); returns how many."""
    policy = OutboundPolicy.from_settings(engine.settings.api.webhooks)
    posted = 0
    while True:
        summary = dispatch_due(engine.db, policy=policy)
        posted += summary.attempted
        if not summary.claimed:
            return posted


def train_job(engine: Engine) -> dict[str, str | None]:
    """The periodic challenger training of every campaign; the promoted version of each."""
    promoted: dict[str, str | None] = {}
    for name in sorted(engine.campaigns):
        report = train_challengers(engine, engine.campaign(name))
        promoted[name] = report.promoted
        log.info("train %s: %s", name, report.skipped or f"promoted {report.promoted}")
    return promoted


def build_scheduler(engine: Engine, *, start_rewards: bool = True) -> BackgroundScheduler:
    """A scheduler (not started) with every scheduled campaign and the reward job."""
    config = engine.settings.scheduler
    # Set on every job, not left to library defaults: a missed tick within the grace runs
    # once (coalesced), and a run never overlaps itself.
    explicit = {
        "coalesce": config.coalesce,
        "misfire_grace_time": config.misfire_grace_seconds,
        "max_instances": 1,
    }
    scheduler = BackgroundScheduler(timezone=config.timezone, job_defaults=explicit)
    for name, campaign in sorted(engine.campaigns.items()):
        if campaign.schedule:
            scheduler.add_job(
                run_scheduled,
                cron_trigger(campaign.schedule, config.timezone),
                args=[engine, name],
                id=f"campaign:{name}",
                name=f"campaign {name}",
                replace_existing=True,
                **explicit,
            )
    periodic: list[tuple[Callable[[Engine], object], int, str, str]] = [
        (retry_deferred, config.retry_interval_seconds, "retry-deferred", "retry deferred sends")
    ]
    if start_rewards:
        periodic.append((reward_job, config.reward_interval_seconds, "rewards", "reward join"))
        periodic.append((train_job, config.train_interval_seconds, "train", "train challengers"))
    if engine.settings.retention is not None:
        periodic.append((apply_retention, RETENTION_INTERVAL_SECONDS, "retention", "retention"))
    if any(c.triggered for c in engine.campaigns.values()):
        # Scheduled triggers are released here too (an API process releases its own
        # at once): each row once, whoever takes its lease first.
        releaser = Releaser(engine)
        release = config.release_interval_seconds
        periodic.append((lambda _: releaser.release_due(), release, "release", "release due"))
        periodic.append((purge_api_data, RETENTION_INTERVAL_SECONDS, "api-purge", "API purge"))
        periodic.append((dispatch_status_webhooks, release, "status-webhooks", "status webhooks"))
    for job, seconds, job_id, name in periodic:
        scheduler.add_job(
            job,
            IntervalTrigger(seconds=seconds),
            args=[engine],
            id=job_id,
            name=name,
            replace_existing=True,
            **explicit,
        )
    return scheduler


def add_one_off(scheduler: BackgroundScheduler, func: Any, *args: Any, job_id: str) -> None:
    """Queue ``func(*args)`` to run now on the scheduler's executor (used by the demo)."""
    scheduler.add_job(func, "date", args=list(args), id=job_id, replace_existing=True)


def catch_up(engine: Engine, name: str) -> RunSummary | None:
    """A new leader's first job per campaign: finish the latest tick (within the misfire
    grace) if no finished run has it: the old leader crashed during it, or died before it."""
    campaign = engine.campaign(name)
    if campaign.schedule is None:
        return None
    trigger = cron_trigger(campaign.schedule, engine.settings.scheduler.timezone)
    grace = timedelta(seconds=engine.settings.scheduler.misfire_grace_seconds)
    tick = latest_tick(trigger, utcnow(), grace)
    if tick is None:
        return None
    with session_scope(engine.db) as session:
        run = session.get(RunRow, run_id_for(name, tick))
        if run is not None and run.status == "finished":
            return None
    log.info("campaign %s: catching up on tick %s", name, tick)
    return run_scheduled(engine, name, now=tick)


class LeaderScheduler:
    """The schedules of one ``serve`` process, running only while it is the leader.

    Every ``serve`` process campaigns for leadership (``engine.sending.leader``); the elected one
    builds and starts the scheduler and catches up on the latest tick of every campaign;
    a deposed one shuts its scheduler down. So any number of ``serve`` processes act as
    exactly one scheduler, with failover.
    """

    def __init__(self, engine: Engine, *, start_rewards: bool = True) -> None:
        self.engine = engine
        self.start_rewards = start_rewards
        self.scheduler: BackgroundScheduler | None = None
        self._guard = threading.Lock()
        self.leadership = Leadership(
            engine.db,
            on_elected=self._elected,
            on_deposed=self._deposed,
            ttl=engine.settings.scheduler.leader_ttl_seconds,
        )

    def _elected(self) -> None:
        with self._guard:
            scheduler = build_scheduler(self.engine, start_rewards=self.start_rewards)
            scheduler.start()
            for name, campaign in sorted(self.engine.campaigns.items()):
                if campaign.schedule:
                    add_one_off(scheduler, catch_up, self.engine, name, job_id=f"catch-up:{name}")
            self.scheduler = scheduler

    def _deposed(self) -> None:
        with self._guard:
            scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=False)

    def start(self) -> bool:
        """Hold the first election now, then keep campaigning in the background;
        returns whether this process leads."""
        leading = self.leadership.step()
        self.leadership.start()
        return leading

    def stop(self) -> None:
        """Stop campaigning and, when leading, the scheduler (the lock is handed back)."""
        self.leadership.stop()
