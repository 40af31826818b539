"""``/metrics`` in Prometheus' text format, for the operations team (docs/guide.md,
"Metrics").

Sends are made by other processes (``tailormail send``, the scheduler leader, workers on
other hosts), so send, reward and suppression figures are gauges read from the database
at scrape time, not counters of this process. What only this process sees is counted
here: webhook events by provider and answer, and the click intake's backlog. The route
answers only with ``Authorization: Bearer <[web] metrics_token>``; without a token set it
is not served (404).
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from engine.db import session_scope
from engine.models import EventRow, LedgerRow, RewardRow, SuppressionRow

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.feedback.intake import Intake

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ProcessCounts:
    """What this serving process counts itself (webhook answers by provider)."""

    def __init__(self) -> None:
        self.webhooks: Counter[tuple[str, str]] = Counter()

    def webhook(self, provider: str, status: int) -> None:
        """One webhook request of ``provider`` answered with ``status``."""
        self.webhooks[(provider[:40], str(status))] += 1


class TailormailCollector(Collector):
    """The figures, read when Prometheus scrapes."""

    def __init__(self, engine: Engine, intake: Intake, counts: ProcessCounts) -> None:
        self.engine = engine
        self.intake = intake
        self.counts = counts

    def collect(self) -> Iterator[Any]:
        ledger = GaugeMetricFamily(
            "tailormail_ledger_rows",
            "Ledger rows by campaign and state (every process's sends).",
            labels=["campaign", "status"],
        )
        rewards = GaugeMetricFamily(
            "tailormail_rewards", "Decisions rewarded, by campaign.", labels=["campaign"]
        )
        reward_sum = GaugeMetricFamily(
            "tailormail_reward_sum", "The sum of the rewards, by campaign.", labels=["campaign"]
        )
        events = GaugeMetricFamily(
            "tailormail_events", "Stored tracking and provider events, by type.", labels=["type"]
        )
        led = LedgerRow.__table__.c  # type: ignore[attr-defined]
        rew = RewardRow.__table__.c  # type: ignore[attr-defined]
        ev = EventRow.__table__.c  # type: ignore[attr-defined]
        with session_scope(self.engine.db) as session:
            by_status = select(led.campaign, led.status, func.count()).group_by(
                led.campaign, led.status
            )
            for campaign, status, n in session.execute(by_status):
                ledger.add_metric([campaign, status], n)
            stmt = select(rew.campaign, func.count(), func.sum(rew.reward)).group_by(rew.campaign)
            for campaign, n, total in session.execute(stmt):
                rewards.add_metric([campaign], n)
                reward_sum.add_metric([campaign], float(total or 0))
            for kind, n in session.execute(select(ev.type, func.count()).group_by(ev.type)):
                events.add_metric([kind], n)
            count = select(func.count()).select_from(SuppressionRow.__table__)  # type: ignore[attr-defined]
            suppressed = session.scalar(count) or 0
        yield from (ledger, rewards, reward_sum, events)
        yield GaugeMetricFamily(
            "tailormail_suppressions", "Addresses that get no further mail.", value=suppressed
        )
        yield GaugeMetricFamily(
            "tailormail_intake_pending",
            "Events this server accepted into its log, not yet in the database.",
            value=self.intake.pending,
        )
        webhooks = CounterMetricFamily(
            "tailormail_webhook_requests",
            "Provider webhook requests this process answered, by provider and status.",
            labels=["provider", "status"],
        )
        for (provider, status), n in sorted(self.counts.webhooks.items()):
            webhooks.add_metric([provider, status], n)
        yield webhooks


class MetricsEndpoint:
    """``GET /metrics`` for one tracking app."""

    def __init__(self, engine: Engine, intake: Intake, counts: ProcessCounts) -> None:
        self.token = engine.settings.web.metrics_token
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(TailormailCollector(engine, intake, counts))

    async def answer(self, request: Request) -> Response:
        """``GET /metrics``: the figures, for the holder of the token."""
        if self.token is None:
            return PlainTextResponse("Not Found", 404)
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        expected = self.token.get_secret_value()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            headers = {"WWW-Authenticate": "Bearer"}
            return PlainTextResponse("metrics need [web] metrics_token", 401, headers=headers)
        body = await run_in_threadpool(generate_latest, self.registry)
        return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})
