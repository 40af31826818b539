"""``tailormail rewards``, ``export`` and ``demo`` run as a user runs them, in a subprocess.

One project made by ``tailormail init`` is shared: recipients and items imported, the
sample campaign sent once (to the outbox) with its attribution window shortened to zero
so the reward job may join at once, and one reader's click stored at the moment of sending.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import vowpalwabbit
from kit.cli import tailormail
from sqlalchemy import func, select

from engine import EventType, TrackingEvent
from engine.app import Engine
from engine.db import session_scope
from engine.feedback.events import record_event
from engine.models import LedgerRow, ModelVersionRow, RewardRow, RunRow

CAMPAIGN = "weekly-picks"
PEOPLE = 40  # the sample project's people.csv


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sample project, sent once, with one click on the first email."""
    root = tmp_path_factory.mktemp("cli")
    ok(tailormail("init", "shop", cwd=root))
    project = root / "shop"
    campaign = project / "config" / "campaigns" / f"{CAMPAIGN}.toml"
    text = campaign.read_text()
    assert 'attribution_window = "3d"' in text
    # The shortest window start-up accepts (zero is refused): it has closed by `rewards`.
    campaign.write_text(text.replace('attribution_window = "3d"', 'attribution_window = "1s"'))
    ok(tailormail("import", "recipients", "people.csv", cwd=project))
    ok(tailormail("import", "items", "items.csv", cwd=project))
    ok(tailormail("send", CAMPAIGN, "--new-run", "first", cwd=project))
    with Engine(project_dir=project) as engine:
        with session_scope(engine.db) as session:
            first = select(LedgerRow).order_by(LedgerRow.id).limit(1)  # type: ignore[arg-type]
            row = session.scalars(first).one()
        assert row.sent_at is not None
        human = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"
        record_event(engine, TrackingEvent(EventType.CLICK, row.id, row.sent_at, user_agent=human))
    time.sleep(1.1)  # every email's one-second window closes (a wait, not a timing assert)
    return project


def count(project: Path, stmt: object) -> int:
    with Engine(project_dir=project) as engine, session_scope(engine.db) as session:
        return int(session.scalar(stmt) or 0)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def rewarded(shop: Path) -> str:
    """The first ``tailormail rewards``: every email's (one-second) window has closed."""
    return ok(tailormail("rewards", cwd=shop))


def test_rewards_joins_closed_windows_and_stores_a_model(shop: Path, rewarded: str) -> None:
    assert f"{CAMPAIGN}: {PEOPLE} rewards joined; model {CAMPAIGN}-vw-v1" in rewarded
    assert count(shop, select(func.count()).select_from(RewardRow)) == PEOPLE
    assert count(shop, select(func.sum(RewardRow.reward))) == 1  # the one click
    champions = select(func.count()).select_from(ModelVersionRow)
    assert count(shop, champions.where(ModelVersionRow.role == "champion")) == 1
    # Nothing new since: nothing joined, the model is left as it is.
    again = ok(tailormail("rewards", cwd=shop))
    assert f"{CAMPAIGN}: 0 rewards joined; model unchanged" in again
    assert count(shop, select(func.count()).select_from(ModelVersionRow)) == 1


def test_export_writes_jsonl_to_stdout(shop: Path, rewarded: str) -> None:
    done = tailormail("export", CAMPAIGN, "--format", "jsonl", cwd=shop)
    records = [json.loads(line) for line in ok(done).splitlines()]
    assert len(records) == PEOPLE
    assert sorted(r["reward"] for r in records) == [0.0] * (PEOPLE - 1) + [1.0]
    assert {r["policy"] for r in records} == {"vw"}
    assert all(r["chosen"] in r["actions"] for r in records)
    assert f"exported {PEOPLE} decisions of {CAMPAIGN} as jsonl" in done.stderr


def test_export_writes_dsjson_that_vowpal_wabbit_reads(
    shop: Path, rewarded: str, tmp_path: Path
) -> None:
    path = tmp_path / "decisions.dsjson"
    ok(tailormail("export", CAMPAIGN, "-f", "dsjson", "-o", str(path), cwd=shop))
    lines = path.read_text().splitlines()
    assert len(lines) == PEOPLE
    assert sorted(json.loads(line)["_label_cost"] for line in lines)[0] == -1.0
    workspace = vowpalwabbit.Workspace(f"--dsjson --cb_explore_adf --quiet -d {path}")
    try:
        workspace.run_parser()
        assert workspace.get_weighted_examples() == PEOPLE
    finally:
        workspace.finish()


def test_export_with_an_unknown_format_exits_2_and_writes_nothing(
    shop: Path, tmp_path: Path
) -> None:
    target = tmp_path / "out.csv"
    done = tailormail("export", CAMPAIGN, "--format", "csv", "-o", str(target), cwd=shop)
    assert done.returncode == 2
    assert "csv" in done.stderr and "jsonl" in done.stderr
    assert not target.exists()


def test_a_tiny_demo_runs_two_rounds(tmp_path: Path) -> None:
    out = ok(
        tailormail(
            "demo",
            "--directory",
            "tiny",
            "--rounds",
            "2",
            "--recipients",
            "24",
            "--seed",
            "3",
            cwd=tmp_path,
        )
    )
    demo = tmp_path / "tiny"
    assert "CTR per round" in out and "learning curve in" in out
    assert "expected CTR over the last 2 rounds: vw" in out
    assert (demo / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Engine(project_dir=demo) as engine, session_scope(engine.db) as session:
        runs = {r.id: r.status for r in session.scalars(select(RunRow))}
        sent = session.scalar(
            select(func.count()).select_from(LedgerRow).where(LedgerRow.status == "sent")  # type: ignore[arg-type]
        )
        rewards = session.scalar(select(func.count()).select_from(RewardRow))
        models = session.scalar(
            select(func.count())
            .select_from(ModelVersionRow)
            .where(ModelVersionRow.campaign == "demo-vw")  # type: ignore[arg-type]
        )
    assert runs == {
        f"demo-{arm}@round-{n:02d}": "finished"
        for arm in ("vw", "uniform", "abtest")
        for n in (1, 2)
    }
    assert sent == rewards == 2 * 24
    assert models == 2
