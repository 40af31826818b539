"""The demo end to end: real scheduler, outbox, tracking server, HTTP clicks, rewards."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import func, select

from engine.app import Engine
from engine.db import session_scope
from engine.demo.simulation import (
    TOPIC_AFFINITY,
    VARIANTS,
    affinity,
    click_probability,
    clicked_item_links,
    item_appeal,
    items_per_click,
    make_catalogue,
    make_population,
    oracle_ctr,
    uniform_ctr,
)
from engine.demo.tour import ARMS, MARKER, DemoResult, run_demo
from engine.errors import TailormailError
from engine.models import (
    EventRow,
    InteractionRow,
    LedgerRow,
    ModelVersionRow,
    RewardRow,
    RunRow,
    as_utc,
)
from engine.reports.items import item_report
from engine.settings import load_settings

ROUNDS = 3


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    directory = tmp_path_factory.mktemp("demo-parent") / "demo"
    return run_demo(
        directory,
        rounds=ROUNDS,
        recipients=300,
        seed=1,
        console=Console(quiet=True),
    )


@pytest.fixture(scope="module")
def engine(demo: DemoResult) -> Iterator[Engine]:
    with Engine(settings=load_settings(demo.directory, environ={})) as engine:
        yield engine


def count(engine: Engine, stmt: object) -> int:
    with session_scope(engine.db) as session:
        return int(session.scalar(stmt) or 0)  # type: ignore[call-overload]


def test_clicks_arrived_through_the_tracking_server(demo: DemoResult, engine: Engine) -> None:
    human_clicks = (
        select(func.count())
        .select_from(EventRow)
        .where(EventRow.type == "click")
        .where(EventRow.bot.is_(False))  # type: ignore[attr-defined]
    )
    assert demo.clicks > 0
    # A reader who clicks opens one item link or more (engine.demo.simulation's preferences).
    item_clicks = sum(r.arms[name].item_clicks for r in demo.rounds for name in ARMS)
    assert count(engine, human_clicks) == item_clicks >= demo.clicks
    unsubscribes = select(func.count()).select_from(EventRow).where(EventRow.type == "unsubscribe")
    assert count(engine, unsubscribes) == demo.unsubscribes
    assert demo.attributed_clicks == demo.clicks  # every click within its attribution window
    assert demo.late_clicks == 0


def test_clicks_carry_the_simulated_time_of_their_send(demo: DemoResult, engine: Engine) -> None:
    # The clock stands still while readers click: each click has its send's time, so no
    # load on the machine can push it past the window (the intake reads engine.clock).
    with session_scope(engine.db) as session:
        pairs = session.execute(
            select(EventRow.timestamp, LedgerRow.sent_at)
            .join(LedgerRow, LedgerRow.id == EventRow.send_id)  # type: ignore[arg-type]
            .where(EventRow.type == "click")
        ).all()
    assert pairs
    assert all(as_utc(clicked) == as_utc(sent) for clicked, sent in pairs)
    days = sorted({as_utc(sent).date() for _, sent in pairs})
    assert len(days) == ROUNDS  # a round is a simulated day


def test_every_round_ran_both_campaigns(demo: DemoResult, engine: Engine) -> None:
    assert [r.round for r in demo.rounds] == list(range(1, ROUNDS + 1))
    with session_scope(engine.db) as session:
        runs = {row.id: row.status for row in session.scalars(select(RunRow))}
    assert runs == {
        f"{name}@round-{n:02d}": "finished" for name in ARMS for n in range(1, ROUNDS + 1)
    }
    for figures in demo.rounds:
        assert all(figures.arms[name].emails > 80 for name in ARMS)  # a third of 300 each


def test_rewards_were_joined_and_a_model_stored(engine: Engine) -> None:
    sent = select(func.count()).select_from(LedgerRow).where(LedgerRow.status == "sent")
    rewards = select(func.count()).select_from(RewardRow)
    assert count(engine, rewards) == count(engine, sent) > 0
    vw_models = (
        select(func.count())
        .select_from(ModelVersionRow)
        .where(ModelVersionRow.campaign == "demo-vw")
        .where(ModelVersionRow.policy == "vw")
    )
    assert count(engine, vw_models) == ROUNDS


def test_the_learning_curve_is_a_png(demo: DemoResult) -> None:
    assert demo.chart == demo.directory / "learning_curve.png"
    assert demo.chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_directory_that_is_not_a_demo_is_never_wiped(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(TailormailError, match="not a demo directory"):
        run_demo(tmp_path, rounds=1, recipients=10, console=Console(quiet=True))
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert not (tmp_path / MARKER).exists()


def test_the_population_and_its_click_table() -> None:
    people = make_population(2000, seed=3)
    assert [p["arm"] for p in people[:4]] == ["vw", "uniform", "abtest", "vw"]
    young_mobile = {"age_band": "young", "device": "mobile", "interest": "news"}
    assert max(VARIANTS, key=lambda v: click_probability(young_mobile, v)) == "visual"
    assert 0.07 < uniform_ctr(people, VARIANTS) < 0.10 < 0.14 < oracle_ctr(people) < 0.17


def test_item_clicks_became_email_click_interactions(demo: DemoResult, engine: Engine) -> None:
    # Every demo email links its items with item_url; a reader opens an item once at most.
    stored = (
        select(func.count()).select_from(InteractionRow).where(InteractionRow.kind == "email_click")
    )
    item_clicks = sum(r.arms[name].item_clicks for r in demo.rounds for name in ARMS)
    assert count(engine, stored) == item_clicks > 0
    for figures in demo.rounds:
        content = figures.content
        assert content is not None and content.items_shown > 0
        assert 0 < content.expected_with < 0.2 and 0 < content.expected_without < 0.2
    report = item_report(engine, "demo-vw")
    assert report.sends > 0 and sum(rate.clicks for rate in report.positions) > 0


def test_readers_open_items_of_their_topic_and_the_first_positions() -> None:
    catalogue = make_catalogue()
    reader = {"interest": "news"}
    news = [item for item, _title, topic, _url in catalogue if topic == "news"]
    others = [item for item, _title, topic, _url in catalogue if topic != "news"]
    assert [affinity(reader, item) for item in news[:2]] == [
        TOPIC_AFFINITY[0] * item_appeal(item) for item in news[:2]
    ]
    assert items_per_click(reader, news[:4]) > 2.0 > 1.3 > items_per_click(reader, others[:4])
    assert items_per_click(reader, []) == 1.0
    # The liked item in the first position draws more clicks than another topic after it.
    best = max(news, key=item_appeal)
    links = [("https://t/c/1", best), ("https://t/c/2", others[0]), ("https://t/c/3", best)]
    coins = random.Random(5)
    clicked = [url for _ in range(2000) for url in clicked_item_links(reader, links[:2], coins)]
    assert clicked.count("https://t/c/1") > 2 * clicked.count("https://t/c/2") > 0
    # One item linked twice is one item, clicked through its first link.
    twice = {
        url for _ in range(200) for url in clicked_item_links(reader, [links[0], links[2]], coins)
    }
    assert twice == {"https://t/c/1"}
