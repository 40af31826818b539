"""The built-in eligibility: suppressions and the frequency caps, per campaign and across."""

from __future__ import annotations

from datetime import timedelta

from kit.project import Project
from sqlmodel import select

from engine.db import session_scope
from engine.models import LedgerRow, utcnow
from engine.sending.real_run import run_campaign
from plugins.frequency_caps import capped


def skip_reasons(project_engine, run_id: str) -> set[str | None]:  # type: ignore[no-untyped-def]
    with session_scope(project_engine.db) as session:
        rows = session.scalars(select(LedgerRow).where(LedgerRow.run_id == run_id)).all()
    return {row.skip_reason for row in rows}


def test_the_cap_across_campaigns_holds_back_a_second_campaign(sqlite_project: Project) -> None:
    sqlite_project.add_campaign("other")
    engine = sqlite_project.engine(frequency_cap="1d")
    sqlite_project.seed(engine, people=5)
    assert run_campaign(engine, "alerts", run_id="first").sent == 5
    second = run_campaign(engine, "other", run_id="second")
    assert (second.sent, second.skipped) == (0, 5)
    assert skip_reasons(engine, "second") == {"frequency cap (all campaigns: one email per 1d)"}
    engine.close()


def test_without_a_cap_across_campaigns_each_campaign_mails(sqlite_project: Project) -> None:
    sqlite_project.add_campaign("other")
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=5)
    run_campaign(engine, "alerts", run_id="first")
    assert run_campaign(engine, "other", run_id="second").sent == 5
    assert run_campaign(engine, "alerts", run_id="third").sent == 5  # no campaign cap either
    engine.close()


def test_capped_answers_a_batch_and_names_the_campaign_cap_first(
    sqlite_project: Project,
) -> None:
    sqlite_project.add_campaign("capped", extra='frequency_cap = "2h"')
    engine = sqlite_project.engine(frequency_cap="1d")
    sqlite_project.seed(engine, people=4)
    run_campaign(engine, "capped", run_id="r")
    campaign = engine.campaign("capped")
    ids = ["u000", "u001", "u002", "u003", "nobody"]
    with session_scope(engine.db) as session:
        now = utcnow()
        assert capped(session, engine, campaign, ids, now) == dict.fromkeys(
            ids[:4], "frequency cap (capped: one email per 2h)"
        )
        later = capped(session, engine, campaign, ids, now + timedelta(hours=3))
        assert later == dict.fromkeys(ids[:4], "frequency cap (all campaigns: one email per 1d)")
        assert capped(session, engine, campaign, ids, now + timedelta(days=2)) == {}
    engine.close()
