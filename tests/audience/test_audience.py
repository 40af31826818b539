"""A campaign's audience filter decides who is mailed: exactly its audience, nobody else."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit.cli import fails, tailormail
from kit.project import Project
from sqlalchemy import event
from sqlmodel import Session, select

from engine.app import Engine
from engine.audience.importer import import_file
from engine.campaigns import Campaign
from engine.errors import ConfigError
from engine.models import LedgerRow, RunRow
from engine.sending.pipeline import RunSummary
from engine.sending.real_run import run_campaign

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


def test_an_attribute_nobody_has_stops_the_send_naming_the_key_and_the_known_ones(
    sqlite_project: Project,
) -> None:
    sqlite_project.add_campaign("filtered", extra='audience = { country = "FR" }')
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=5)
    with pytest.raises(ConfigError) as stopped:
        run_campaign(engine, "filtered", run_id="r1")
    assert str(stopped.value) == (
        "campaign 'filtered': audience filter on 'country', an attribute no recipient has "
        "(attributes: first_name, segment)"
    )
    assert mailed(engine) == [] and ledger_emails(engine) == []
    with Session(engine.db) as session:
        run = session.get(RunRow, "r1")
        assert run is not None and run.status == "failed" and "country" in (run.error or "")


def test_an_empty_audience_filter_mails_everyone(sqlite_project: Project) -> None:
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=5)
    assert run_campaign(engine, "alerts", run_id="r1").sent == 5
    assert mailed(engine) == sorted(f"user{i}@example.com" for i in range(5))


PEOPLE = """id,email,plan,age,country,phone,name
u1,u1@example.com,Pro,17,FR,+33100,Ann
u2,u2@example.com,pro,30,de,,Bob
u3,u3@example.com,free,65,BE,+32100,Cy
u4,u4@example.com,FREE,100,,,Di
u5,u5@example.com,trial,0042,,,Ed
u6,u6@example.com,,9,,,ÉLISE
"""


@pytest.fixture
def varied(project: Project) -> Iterator[Engine]:
    """Six recipients whose attributes exercise every kind of filter (both databases)."""
    engine = project.engine()
    path = project.root / "varied.csv"
    path.write_text(PEOPLE, encoding="utf-8")
    import_file(engine.db, "recipients", path)
    yield engine
    engine.close()


@pytest.mark.parametrize(
    ("audience", "expected"),
    [
        ('{ plan = "PRO" }', "u1 u2"),  # strings ignore case by default
        ('{ plan = { eq = "Pro", case_sensitive = true } }', "u1"),
        ('{ name = "élise" }', "u6"),  # not only ASCII letters
        ('{ country = ["fr", "BE"] }', "u1 u3"),
        ('{ plan = { not = "free" } }', "u1 u2 u5 u6"),  # no plan is "not free"
        ('{ plan = { not_in = ["free", "trial"] } }', "u1 u2 u6"),
        ("{ age = { min = 18, max = 65 } }", "u2 u3"),  # "0042" is text, not a number
        ("{ age = { min = 10 } }", "u1 u2 u3 u4"),  # numeric: 9 < 10 < 100
        ("{ age = { above = 17, below = 65 } }", "u2"),
        ("{ age = 30 }", "u2"),
        ("{ phone = { exists = true } }", "u1 u3"),
        ("{ phone = { exists = false } }", "u2 u4 u5 u6"),
        ('{ plan = "pro", age = { min = 18 } }', "u2"),  # every key must match
    ],
)
def test_audience_filters_are_evaluated_by_the_database(
    varied: Engine, audience: str, expected: str
) -> None:
    campaign = campaign_with(audience)
    assert [r.recipient_id for r in varied.audience(campaign)] == expected.split()
    assert varied.audience_size(campaign) == len(expected.split())


def campaign_with(audience: str) -> Campaign:
    data = tomllib.loads(f"audience = {audience}")
    variant = {"key": "a", "subject": "s", "template": "t/a.html"}
    return Campaign.model_validate({"name": "f", "variants": [variant]} | data)


@pytest.mark.parametrize(
    ("audience", "phrase"),
    [
        ("{ age = { min = 30, max = 20 } }", "min (30.0) is above max (20.0)"),
        ("{ age = { mn = 3 } }", "unknown key"),
        ("{ age = { case_sensitive = true } }", "say what to test"),
        ('{ "a\\"b" = 1 }', "no quotes"),
    ],
)
def test_a_malformed_audience_filter_is_a_config_error(
    sqlite_project: Project, audience: str, phrase: str
) -> None:
    sqlite_project.add_campaign("bad", extra=f"audience = {audience}")
    with pytest.raises(ConfigError, match="audience") as error:
        sqlite_project.engine()
    assert phrase in str(error.value)


def test_the_run_reads_the_audience_in_keyset_pages_filtered_in_sql(
    sqlite_project: Project,
) -> None:
    sqlite_project.add_campaign("filtered", extra='audience = { segment = "a" }')
    engine = sqlite_project.engine(delivery={"batch_size": 2})
    sqlite_project.seed(engine, people=11)
    statements: list[str] = []
    listener = lambda conn, cursor, statement, *args: statements.append(statement)  # noqa: E731
    event.listen(engine.db, "before_cursor_execute", listener)
    assert run_campaign(engine, "filtered", run_id="r").sent == 6
    event.remove(engine.db, "before_cursor_execute", listener)
    pages = [s for s in statements if s.lstrip().startswith("SELECT recipients.id")]
    # Six people in segment a, two per page: three full pages and an empty one at most.
    assert 3 <= len(pages) <= 4
    assert all("json" in s.lower() and "LIMIT" in s and "recipients.id >" in s for s in pages)


def test_the_cli_stops_a_send_on_an_unknown_audience_key(tmp_path: Path) -> None:
    assert tailormail("init", "shop", cwd=tmp_path).returncode == 0
    project = tmp_path / "shop"
    config = project / "config" / "campaigns" / "weekly-picks.toml"
    config.write_text(config.read_text().replace("audience = {}", 'audience = { contry = "FR" }'))
    for kind, name in (("recipients", "people.csv"), ("items", "items.csv")):
        assert tailormail("import", kind, name, cwd=project).returncode == 0
    fails(tailormail("send", "weekly-picks", cwd=project), "'contry'", "attributes: ")
    assert not (project / "outbox").exists()


def test_a_scheduled_run_with_an_unknown_audience_key_stops_and_is_marked_failed(
    sqlite_project: Project,
) -> None:
    from datetime import UTC, datetime

    from engine.sending.scheduler import run_scheduled

    sqlite_project.add_campaign("filtered", extra='audience = { segmnt = "a" }')
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=4)
    with pytest.raises(ConfigError, match="'segmnt'.*attributes: first_name, segment"):
        run_scheduled(engine, "filtered", now=datetime(2030, 1, 7, 9, 0, 30, tzinfo=UTC))
    assert mailed(engine) == [] and ledger_emails(engine) == []
    with Session(engine.db) as session:
        runs = session.exec(select(RunRow)).all()
    assert [(r.status, "segmnt" in (r.error or "")) for r in runs] == [("failed", True)]


def test_the_unknown_key_check_lists_the_attributes_on_both_databases(varied: Engine) -> None:
    varied.check_audience(campaign_with('{ plan = "pro", phone = { exists = false } }'))
    with pytest.raises(ConfigError) as error:
        varied.check_audience(campaign_with('{ plan = "pro", pLan = "x" }'))
    assert str(error.value) == (
        "campaign 'f': audience filter on 'pLan', an attribute no recipient has "
        "(attributes: age, country, name, phone, plan)"
    )


@pytest.mark.parametrize(
    ("cell", "stored"),
    [
        ("42", 42),
        ("-3", -3),
        ("9.5", 9.5),
        ("0", 0),
        ("0.25", 0.25),
        ("0042", "0042"),  # a ZIP code keeps its zeros
        ("+33612345678", "+33612345678"),
        ("1e3", "1e3"),
        ("1234567890123456", "1234567890123456"),  # 16 digits: an id, not a quantity
        ("12.", "12."),
        ("true", "true"),
        (" 7", " 7"),
    ],
)
def test_csv_cells_that_spell_plain_numbers_are_stored_as_numbers(
    cell: str, stored: object
) -> None:
    from engine.audience.importer import csv_scalar

    value = csv_scalar(cell)
    assert value == stored and type(value) is type(stored)
