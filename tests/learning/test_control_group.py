"""Control group and apprentice mode: a held-out share always gets the baseline, the lift
against it is measured with an interval, and a policy in shadow learns from the baseline."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from kit.champion import ledger, make_project, send_and_reward, versions
from kit.project import Project

from engine.errors import ConfigError
from engine.reports.learning import value_summary
from engine.reports.lift import measured_lift

# Everyone clicks b three times as often as a: uniform earns 10%, the fixed a 5%.
B_BETTER = {"a": {"a": 0.05, "b": 0.15}, "b": {"a": 0.05, "b": 0.15}}
TRUE_LIFT = 0.10 - 0.05
CONTROL = """
[baseline]
variant = "a"
control_share = 0.3
"""


def test_the_lift_over_the_control_group_covers_the_known_truth(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", f"sqlite:///{tmp_path}/t.db")
    project.add_campaign("held", policy="uniform", extra=CONTROL)
    engine = project.engine()
    project.seed(engine, people=1000)
    send_and_reward(engine, "held", runs=2, rng=random.Random(8), table=B_BETTER)
    rows = ledger(engine)
    control = [r for r in rows if r.arm == "control"]
    treated = [r for r in rows if r.arm == "treatment"]
    assert len(control) + len(treated) == len(rows) == 2000
    assert 0.25 < len(control) / len(rows) < 0.35
    assert {(r.variant, r.probability, r.policy) for r in control} == {("a", 1.0, "fixed")}
    assert {r.policy for r in treated} == {"uniform"}
    # A person stays in their arm from run to run.
    arms = {(r.recipient_id, r.arm) for r in rows}
    assert len(arms) == 1000

    lift = measured_lift(engine, "held")
    assert lift is not None
    assert lift.ctr.ci_low <= TRUE_LIFT <= lift.ctr.ci_high, lift.ctr
    assert lift.ctr.ci_low > 0  # the policy is measurably better than the baseline
    assert lift.reward.ci_low <= TRUE_LIFT <= lift.reward.ci_high
    assert (lift.treatment.n, lift.control.n) == (len(treated), len(control))
    engine.close()


def test_apprentice_mode_logs_the_policy_in_shadow_and_teaches_it(project: Project) -> None:
    apprentice = '[baseline]\npolicy = "uniform"\napprentice = true\n'
    project.add_campaign("shadowed", policy="vw", extra=apprentice)
    engine = project.engine()
    project.seed(engine, people=40)
    send_and_reward(engine, "shadowed", runs=1, rng=random.Random(1), learn=True)
    rows = ledger(engine)
    assert {r.policy for r in rows} == {"uniform"}  # the baseline acted for everyone
    assert {r.probability for r in rows} == {0.5}
    for row in rows:
        assert row.arm == "treatment" and row.shadow is not None
        assert row.shadow["policy"] == "vw" and row.shadow["variant"] in {"a", "b"}
        assert row.shadow["pmf"][row.shadow["variant"]] == row.shadow["probability"]
    (model,) = versions(engine, "shadowed")  # the policy learned from the baseline's sends
    assert model.policy == "vw" and model.n_feedback == 40
    send_and_reward(engine, "shadowed", runs=1, rng=random.Random(2), start=1)
    later = ledger(engine, "shadowed-r1")
    assert {r.shadow["model_version"] for r in later if r.shadow} == {model.version}
    # The report estimates what the policy in shadow would have earned acting.
    values = value_summary(engine, engine.campaign("shadowed"))
    shadow = values["policy in shadow (estimated)"]
    assert shadow.n == 80 and shadow.ci_low <= shadow.value <= shadow.ci_high
    engine.close()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[baseline]\nvariant = "zz"\n', "baseline.variant: 'zz' is not one of the variants"),
        ("[baseline]\ncontrol_share = 1.5\n", "control_share"),
        ('[baseline]\npolicy = "nope"\n', "baseline.policy"),
        ("[baseline]\nshare = 0.1\n", "share"),
    ],
)
def test_a_bad_baseline_is_named(sqlite_project: Project, extra: str, message: str) -> None:
    sqlite_project.add_campaign("bad", extra=extra)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        sqlite_project.engine()
