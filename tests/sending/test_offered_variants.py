"""Decisions remember the variants as offered: learning, export and evaluation use them
even after the campaign file has changed its variants."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from kit.project import Project
from sqlmodel import Session, col, select

from engine import Context, Decision, EventType, Feedback, TrackingEvent, Variant, hookimpl
from engine.feedback.events import record_event
from engine.feedback.reward_job import join_rewards
from engine.learning.export import export_decisions
from engine.models import LedgerRow, RewardRow, RunRow, utcnow
from engine.sampling import decide
from engine.sending.real_run import run_campaign

LEARNED: list[Feedback] = []


class RecordingPolicy:
    """A uniform policy that keeps every feedback it is taught."""

    name = "recording"

    def __init__(self) -> None:
        self.model_version: str | None = None

    def choose(
        self, context: Context, variants: Sequence[Variant], *, seed: int | None = None
    ) -> Decision:
        return decide({v.key: 1 / len(variants) for v in variants}, seed, self.name, None)

    def learn(self, feedback: Iterable[Feedback]) -> None:
        LEARNED.extend(feedback)

    def save(self) -> bytes:
        return b"recording"

    def load(self, data: bytes) -> None:
        pass


class RecordingPlugin:
    @staticmethod
    @hookimpl
    def register_policies(register):  # type: ignore[no-untyped-def]
        register("recording", RecordingPolicy)


CHANGED_VARIANTS = """
[[variants]]
key = "b"
subject = "Picks"
template = "t/b.html"
features = { layout = "grid" }

[[variants]]
key = "c"
subject = "New"
template = "t/a.html"
features = { layout = "list" }
"""


def test_learning_and_export_use_the_variants_as_offered(project: Project) -> None:
    LEARNED.clear()
    path = project.add_campaign("offers", policy="recording")
    engine = project.engine(plugins=[RecordingPlugin()])
    project.seed(engine, people=8)
    run_campaign(engine, "offers", run_id="r1")
    with Session(engine.db) as session:
        rows = list(session.exec(select(LedgerRow)).all())
    # Stored once, on the run: each row offered them keeps none of its own.
    assert [v["key"] for v in session_run(engine, "r1").offered or []] == ["a", "b"]
    assert all(row.offered is None for row in rows)
    record_event(engine, TrackingEvent(EventType.CLICK, rows[0].id, utcnow(), url="x"))
    # A scanner's click and a machine-flagged one change no reward.
    record_event(engine, TrackingEvent(EventType.CLICK, rows[1].id, utcnow(), url="x", bot=True))
    record_event(
        engine, TrackingEvent(EventType.CLICK, rows[2].id, utcnow(), url="x", machine=True)
    )
    engine.close()

    # The campaign file now offers b (with other features) and a new c; a is gone.
    text = path.read_text()
    path.write_text(text[: text.index("[[variants]]")] + CHANGED_VARIANTS)
    engine = project.engine(plugins=[RecordingPlugin()])
    join_rewards(engine, campaign="offers", now=utcnow() + timedelta(hours=2))
    assert len(LEARNED) == 8  # rows whose variant "a" is gone today still teach
    for item in LEARNED:
        assert [(v.key, v.features) for v in item.variants] == [
            ("a", {"layout": "plain"}),
            ("b", {"layout": "cards"}),
        ]
    with Session(engine.db) as session:
        rewards = {r.send_id: r.reward for r in session.exec(select(RewardRow)).all()}
    assert rewards[rows[0].id] == 1.0  # type: ignore[index]
    assert rewards[rows[1].id] == rewards[rows[2].id] == 0.0  # type: ignore[index]

    out = io.StringIO()
    export_decisions(engine, "offers", "dsjson", out)
    first = json.loads(out.getvalue().splitlines()[0])
    assert first["c"]["_multi"] == [
        {"A": {"key": "a", "layout": "plain"}},
        {"A": {"key": "b", "layout": "cards"}},
    ]
    engine.close()


def session_run(engine: Any, run_id: str) -> RunRow:
    with Session(engine.db) as session:
        found = session.get(RunRow, run_id)
        assert found is not None
        return found


def test_a_run_resumed_after_its_variants_changed_logs_each_row_with_what_it_offered(
    project: Project,
) -> None:
    """The run keeps the variants it began with; rows decided after the campaign file
    changed them carry their own, and export and learning read each row's set."""
    path = project.add_campaign("offers", policy="recording")
    engine = project.engine(plugins=[RecordingPlugin()])
    project.seed(engine, people=8)
    run_campaign(engine, "offers", run_id="r1")
    engine.close()
    text = path.read_text()
    path.write_text(text[: text.index("[[variants]]")] + CHANGED_VARIANTS)
    engine = project.engine(plugins=[RecordingPlugin()])
    project.seed(engine, people=12)  # four newcomers
    assert run_campaign(engine, "offers", run_id="r1", include_new=True).sent == 4
    with Session(engine.db) as session:
        rows = list(session.exec(select(LedgerRow).order_by(col(LedgerRow.id))).all())
    assert [r.offered is None for r in rows] == [True] * 8 + [False] * 4
    assert [v["key"] for v in session_run(engine, "r1").offered or []] == ["a", "b"]
    join_rewards(engine, campaign="offers", now=utcnow() + timedelta(hours=2))
    out = io.StringIO()
    export_decisions(engine, "offers", "jsonl", out)
    offered = [
        [v["key"] for v in json.loads(line)["offered"]] for line in out.getvalue().splitlines()
    ]
    assert offered == [["a", "b"]] * 8 + [["b", "c"]] * 4
    engine.close()
