"""The batch forms of the per-recipient hooks: one call per batch, merged with the rest."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kit.project import Project
from sqlalchemy import event
from sqlmodel import select

from engine import hookimpl
from engine.db import session_scope
from engine.models import LedgerRow, SuppressionRow
from engine.sending.real_run import run_campaign


class BatchPlugin:
    """Answers both batch hooks and records the size of each batch it was given."""

    def __init__(self) -> None:
        self.eligible_calls: list[int] = []
        self.feature_calls: list[int] = []

    @hookimpl
    def eligible_batch(self, engine, campaign, recipients):  # type: ignore[no-untyped-def]
        self.eligible_calls.append(len(recipients))
        return {
            r.recipient_id: "vip list only" for r in recipients if r.attributes["segment"] == "b"
        }

    @hookimpl
    def recipient_features_batch(self, engine, campaign, recipients):  # type: ignore[no-untyped-def]
        self.feature_calls.append(len(recipients))
        return {
            r.recipient_id: {"rank": int(r.recipient_id[1:]), "segment": "x"} for r in recipients
        }


class PerRecipient:
    @staticmethod
    @hookimpl
    def recipient_features(engine, campaign, recipient):  # type: ignore[no-untyped-def]
        return {"rank": -1}


def ledger(engine: Any, run_id: str) -> dict[str, LedgerRow]:
    with session_scope(engine.db) as session:
        rows = session.scalars(select(LedgerRow).where(LedgerRow.run_id == run_id)).all()
    return {row.recipient_id: row for row in rows}


def test_batch_hooks_are_called_once_per_batch_and_their_answers_land_in_the_ledger(
    sqlite_project: Project,
) -> None:
    plugin = BatchPlugin()
    engine = sqlite_project.engine(plugins=[plugin], delivery={"batch_size": 4})
    sqlite_project.seed(engine, people=10)
    summary = run_campaign(engine, "alerts", run_id="r")
    assert (summary.sent, summary.skipped) == (5, 5)
    assert plugin.eligible_calls == [4, 4, 2]
    # Only the eligible ones are asked for features: two of every four per batch.
    assert plugin.feature_calls == [2, 2, 1]
    rows = ledger(engine, "r")
    assert rows["u001"].skip_reason == "vip list only" and rows["u001"].context is None
    # The plugin's "segment" wins over the built-in attribute feature; the provider stays
    # (and the deny-listed first name never was one).
    assert rows["u004"].context == {"rank": 4, "segment": "x", "email_provider": "other"}


def test_per_recipient_features_win_over_batch_ones(sqlite_project: Project) -> None:
    engine = sqlite_project.engine(plugins=[BatchPlugin(), PerRecipient()])
    sqlite_project.seed(engine, people=2)
    campaign = engine.campaign("alerts")
    context = engine.context_for(campaign, engine.audience(campaign)[0])
    assert context["rank"] == -1 and context["segment"] == "x"


def test_the_built_in_suppression_reason_wins_over_a_plugin_batch_reason(
    sqlite_project: Project,
) -> None:
    engine = sqlite_project.engine(plugins=[BatchPlugin()])
    sqlite_project.seed(engine, people=4)
    with session_scope(engine.db) as session:
        session.add(SuppressionRow(email="user1@example.com", reason="complaint"))
    campaign = engine.campaign("alerts")
    reasons = engine.ineligible(campaign, engine.audience(campaign))
    assert reasons == {"u001": "suppressed (complaint)", "u003": "vip list only"}


@contextmanager
def counted_statements(engine: Any) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(engine.db, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine.db, "before_cursor_execute", count)


def test_built_in_eligibility_costs_a_few_queries_per_batch_whatever_its_size(
    sqlite_project: Project,
) -> None:
    sqlite_project.add_campaign("capped", extra='frequency_cap = "1d"')
    engine = sqlite_project.engine(frequency_cap="2d")
    sqlite_project.seed(engine, people=40)
    run_campaign(engine, "capped", run_id="first")
    campaign = engine.campaign("capped")
    people = engine.audience(campaign)
    with session_scope(engine.db) as session:
        session.add(SuppressionRow(email="user3@example.com", reason="unsubscribe"))
    with counted_statements(engine) as few:
        engine.ineligible(campaign, people[:4])
    with counted_statements(engine) as statements:
        reasons = engine.ineligible(campaign, people)
    # Forgotten addresses and suppressions (both tables) in the core's compliance check,
    # caps (both) in plugins.frequency_caps: one query each, for 4 recipients as for 40.
    assert len(statements) == len(few) == 3, statements
    assert sum("suppressions" in s for s in statements) == 1
    assert sum("GROUP BY ledger.recipient_id" in s for s in statements) == 1
    assert reasons["u003"] == "suppressed (unsubscribe)"
    assert reasons["u000"] == "frequency cap (capped: one email per 1d)"
    assert len(reasons) == 40
