"""A campaign's audience filter decides who is mailed: exactly its audience, nobody else."""

from __future__ import annotations

from conftest import Project
from sqlmodel import Session, select

from engine.app import Engine
from engine.models import LedgerRow
from engine.pipeline import RunSummary, run_campaign

# conftest's people: u000..u011, segment "a" for even numbers, "b" for odd ones.
SEGMENT_A = {f"user{i}@example.com" for i in range(0, 12, 2)}


def mailed(engine: object) -> list[str]:
    return sorted(m.to_address for m in getattr(engine, "memory_outbox", []))


def ledger_emails(engine: object) -> list[str]:
    with Session(engine.db) as session:  # type: ignore[attr-defined]
        return sorted(r.email for r in session.exec(select(LedgerRow)).all())


def send_with_audience(project: Project, audience: str, people: int) -> tuple[Engine, RunSummary]:
    """Send a campaign whose audience filter is ``audience`` (TOML) to ``people`` people."""
    project.add_campaign("filtered", extra=f"audience = {audience}")
    engine = project.engine()
    project.seed(engine, people=people)
    return engine, run_campaign(engine, "filtered", run_id="r1")


def test_a_filtered_campaign_mails_exactly_its_audience(project: Project) -> None:
    engine, summary = send_with_audience(project, '{ segment = "a" }', people=12)
    assert (summary.audience, summary.sent) == (6, 6)
    assert mailed(engine) == sorted(SEGMENT_A)
    # Outsiders get no ledger row at all: they were never candidates, not skips.
    assert ledger_emails(engine) == sorted(SEGMENT_A)


def test_audience_keys_all_apply_and_a_list_means_any_of_its_values(
    sqlite_project: Project,
) -> None:
    audience = '{ segment = "a", first_name = ["Name0", "Name3", "Name4", "Nobody"] }'
    engine, _ = send_with_audience(sqlite_project, audience, people=12)
    # Name3 is in segment b: both keys must match.
    assert mailed(engine) == ["user0@example.com", "user4@example.com"]


def test_an_attribute_nobody_has_selects_nobody(sqlite_project: Project) -> None:
    engine, summary = send_with_audience(sqlite_project, '{ country = "FR" }', people=5)
    assert (summary.audience, summary.sent) == (0, 0)
    assert mailed(engine) == [] and ledger_emails(engine) == []


def test_an_empty_audience_filter_mails_everyone(sqlite_project: Project) -> None:
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=5)
    assert run_campaign(engine, "alerts", run_id="r1").sent == 5
    assert mailed(engine) == sorted(f"user{i}@example.com" for i in range(5))
