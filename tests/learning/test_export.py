"""The ledger exports as a logged-bandit data set, and VW's own parser reads the DSJSON."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import pytest
import vowpalwabbit
from kit.project import Project
from sqlmodel import Session, select

from engine import EventType, TrackingEvent
from engine.feedback.events import record_event
from engine.feedback.reward_job import join_rewards
from engine.learning.export import export_decisions
from engine.models import LedgerRow, utcnow
from engine.sending.real_run import run_campaign


def rewarded_project(project: Project) -> tuple[object, list[LedgerRow]]:
    project.add_campaign("learning", policy="vw")
    engine = project.engine()
    project.seed(engine, people=12)
    run_campaign(engine, "learning", run_id="r1")
    with Session(engine.db) as session:
        rows = list(session.exec(select(LedgerRow).order_by(LedgerRow.id)).all())
    for row in rows[:3]:
        record_event(engine, TrackingEvent(EventType.CLICK, row.id, utcnow()))
    join_rewards(engine, now=utcnow() + timedelta(hours=2))
    return engine, rows


def test_jsonl_export_has_one_record_per_rewarded_decision(project: Project) -> None:
    engine, rows = rewarded_project(project)
    out = io.StringIO()
    assert export_decisions(engine, "learning", "jsonl", out) == 12  # type: ignore[arg-type]
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["decision_id"] for r in records] == [row.decision_id for row in rows]
    first = records[0]
    assert first["reward"] == 1.0 and records[5]["reward"] == 0.0
    assert first["actions"] == ["a", "b"] and first["chosen"] in first["actions"]
    assert first["probability"] == pytest.approx(first["pmf"][first["chosen"]])
    assert first["context"]["segment"] in {"a", "b"} and first["policy"] == "vw"


def test_dsjson_export_is_read_by_vowpal_wabbit(project: Project, tmp_path: Path) -> None:
    engine, rows = rewarded_project(project)
    path = tmp_path / "learning.dsjson"
    with path.open("w") as handle:
        assert export_decisions(engine, "learning", "dsjson", handle) == 12  # type: ignore[arg-type]
    records = [json.loads(line) for line in path.read_text().splitlines()]
    first = records[0]
    assert first["_label_cost"] == -1.0 and first["EventId"] == rows[0].decision_id
    chosen = first["c"]["_multi"][first["_labelIndex"]]["A"]["key"]
    assert chosen == rows[0].variant
    assert first["a"][0] == first["_label_Action"]
    assert first["p"][0] == pytest.approx(first["_label_probability"])
    assert first["c"]["U"]["segment"] in {"a", "b"}
    workspace = vowpalwabbit.Workspace(f"--dsjson --cb_explore_adf -q UA --quiet -d {path}")
    try:
        workspace.run_parser()
        assert workspace.get_weighted_examples() == 12
    finally:
        workspace.finish()


def test_export_rejects_an_unknown_format_or_campaign(sqlite_project: Project) -> None:
    from engine.errors import ConfigError

    engine = sqlite_project.engine()
    with pytest.raises(ValueError, match="unknown format 'csv'"):
        export_decisions(engine, "alerts", "csv", io.StringIO())
    with pytest.raises(ConfigError, match="unknown campaign 'nope'"):
        export_decisions(engine, "nope", "jsonl", io.StringIO())
