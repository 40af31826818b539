"""The built-in eligibility at its edges: suppressions (everywhere, one campaign, letter
case) and both frequency caps exactly at their period's end, asked in process.

Written against the mutants of ``plugins/eligibility.py`` (now ``engine/audience/compliance.py`` and
``plugins/frequency_caps.py``) that ``test_eligibility.py``
lets through (``make mutate``): each test names the edge a wrong comparison would move.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from kit.project import Project
from sqlmodel import Session

from engine import Recipient
from engine.app import Engine
from engine.audience.compliance import suppressed
from engine.db import session_scope
from engine.models import CampaignSuppressionRow, LedgerRow, LedgerStatus, SuppressionRow, utcnow
from plugins.frequency_caps import capped

NOW = utcnow().replace(microsecond=0)
OWN = "frequency cap (capped: one email per 2h)"
EVERYONE = "frequency cap (all campaigns: one email per 1d)"


@pytest.fixture
def engine(sqlite_project: Project) -> Engine:
    sqlite_project.add_campaign("capped", extra='frequency_cap = "2h"')
    sqlite_project.add_campaign("other")
    return sqlite_project.engine(frequency_cap="1d")


def sent(
    engine: Engine, campaign: str, recipient: str, ago: timedelta, status: str = "sent"
) -> None:
    """A ledger row: ``recipient`` got ``campaign`` ``ago`` before NOW."""
    with Session(engine.db) as session:
        session.add(
            LedgerRow(
                run_id=f"{campaign}-{recipient}-{ago}",
                campaign=campaign,
                recipient_id=recipient,
                email=f"{recipient}@example.com",
                decision_id=f"{campaign}-{recipient}-{ago.total_seconds()}-{status}",
                status=status,
                sent_at=NOW - ago,
            )
        )
        session.commit()


def caps(engine: Engine, campaign: str, ids: list[str]) -> dict[str, str]:
    with session_scope(engine.db) as session:
        return capped(session, engine, engine.campaign(campaign), ids, NOW)


def test_the_campaign_cap_holds_until_its_period_has_passed_exactly(engine: Engine) -> None:
    sent(engine, "capped", "edge", timedelta(hours=2))  # exactly one period ago: held
    sent(engine, "capped", "past", timedelta(hours=2, seconds=1))  # then the 1d cap holds
    sent(engine, "capped", "fresh", timedelta(minutes=1))
    assert caps(engine, "capped", ["edge", "past", "fresh", "nobody"]) == {
        "edge": OWN,
        "past": EVERYONE,
        "fresh": OWN,
    }


def test_the_cap_across_campaigns_holds_until_its_period_has_passed_exactly(
    engine: Engine,
) -> None:
    sent(engine, "other", "edge", timedelta(days=1))
    sent(engine, "other", "past", timedelta(days=1, seconds=1))
    sent(engine, "other", "recent", timedelta(hours=1))  # another campaign: the 1d cap
    assert caps(engine, "capped", ["edge", "past", "recent"]) == {
        "edge": EVERYONE,
        "recent": EVERYONE,
    }


def test_only_sent_rows_count_toward_a_cap(engine: Engine) -> None:
    sent(engine, "capped", "failed", timedelta(minutes=1), status=LedgerStatus.FAILED)
    sent(engine, "capped", "deferred", timedelta(minutes=1), status=LedgerStatus.DEFERRED)
    assert caps(engine, "capped", ["failed", "deferred"]) == {}


def test_without_a_campaign_cap_only_the_cap_across_campaigns_holds(engine: Engine) -> None:
    sent(engine, "other", "recent", timedelta(hours=1))
    sent(engine, "other", "old", timedelta(days=2))
    assert caps(engine, "other", ["recent", "old"]) == {"recent": EVERYONE}


def test_without_any_cap_nobody_is_held(sqlite_project: Project) -> None:
    engine = sqlite_project.engine()
    sent(engine, "alerts", "recent", timedelta(minutes=1))
    assert caps(engine, "alerts", ["recent"]) == {}
    assert caps(engine, "alerts", []) == {}


def test_a_campaign_cap_alone_holds_only_that_campaigns_recipients(
    sqlite_project: Project,
) -> None:
    sqlite_project.add_campaign("capped", extra='frequency_cap = "2h"')
    sqlite_project.add_campaign("other")
    engine = sqlite_project.engine()
    sent(engine, "capped", "mine", timedelta(hours=1))
    sent(engine, "other", "theirs", timedelta(minutes=1))
    assert caps(engine, "capped", ["mine", "theirs"]) == {"mine": OWN}


def suppress(engine: Engine, everywhere: dict[str, str], campaign_only: list[str]) -> None:
    with Session(engine.db) as session:
        session.add_all(SuppressionRow(email=e, reason=r) for e, r in everywhere.items())
        session.add_all(CampaignSuppressionRow(email=e, campaign="capped") for e in campaign_only)
        session.add(CampaignSuppressionRow(email="elsewhere@example.com", campaign="other"))
        session.commit()


def test_suppressed_names_each_reason_and_the_address_suppressed_everywhere_wins(
    engine: Engine,
) -> None:
    suppress(
        engine,
        {"bounced@example.com": "bounce", "both@example.com": "complaint"},
        ["left@example.com", "both@example.com"],
    )
    wanted = {
        "bounced@example.com",
        "both@example.com",
        "left@example.com",
        "elsewhere@example.com",
        "fine@example.com",
    }
    with session_scope(engine.db) as session:
        found = suppressed(session, engine.campaign("capped"), wanted)
        assert suppressed(session, engine.campaign("capped"), set()) == {}
    assert found == {
        "bounced@example.com": "suppressed (bounce)",
        "both@example.com": "suppressed (complaint)",
        "left@example.com": "unsubscribed from this campaign",
    }


def test_eligible_batch_matches_addresses_in_any_case_and_caps_the_rest(engine: Engine) -> None:
    suppress(engine, {"bounced@example.com": "bounce"}, [])
    sent(engine, "capped", "u2", timedelta(minutes=5))
    sent(engine, "capped", "u1", timedelta(minutes=5))  # suppressed too: suppression wins
    people = [
        Recipient(recipient_id="u1", email="Bounced@Example.COM"),
        Recipient(recipient_id="u2", email="u2@example.com"),
        Recipient(recipient_id="u3", email="u3@example.com"),
    ]
    assert engine.ineligible(engine.campaign("capped"), people) == {
        "u1": "suppressed (bounce)",
        "u2": OWN,
    }
