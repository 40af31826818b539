"""``report`` and ``rewards`` explain the learning: measured lift against the control,
value against the control and a uniform split, model versions, rewards still waiting,
the CTR chart, and CTR by subject and by template for joint variants."""

from __future__ import annotations

import random
from pathlib import Path

from kit.champion import ledger, make_project, send_and_reward
from kit.cli import tailormail

from engine.reports.learning import waiting_rewards
from engine.sending.real_run import run_campaign

B_BETTER = {"a": {"a": 0.05, "b": 0.15}, "b": {"a": 0.05, "b": 0.15}}
JOINT = """
[[subjects]]
key = "short"
subject = "Picks"
features = { length = "short" }

[[subjects]]
key = "long"
subject = "This week's picks for {{ recipient.first_name }}"
features = { length = "long" }

[[templates]]
key = "plain"
template = "t/a.html"
features = { layout = "plain" }

[[templates]]
key = "cards"
template = "t/b.html"
features = { layout = "cards" }
"""


def test_report_shows_lift_values_models_waiting_rewards_and_a_chart(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", f"sqlite:///{tmp_path}/t.db")
    extra = '[baseline]\nvariant = "a"\ncontrol_share = 0.3\n'
    project.add_campaign("held", policy="vw", extra=extra)
    engine = project.engine()
    project.seed(engine, people=300)
    send_and_reward(engine, "held", runs=2, rng=random.Random(8), learn=True, table=B_BETTER)
    run_campaign(engine, "held", run_id="fresh")  # inside its window: waiting
    waiting = waiting_rewards(engine.db, engine.campaign("held"))
    assert waiting.in_window == 300 and waiting.ready == 0 and waiting.next_close is not None
    engine.close()

    done = tailormail("report", "held", "--png", "chart.png", cwd=project.root)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "lift against the control group" in out and " points" in out
    for label in ("as sent", "uniform split (estimated)", "control group (measured)"):
        assert label in out
    assert "champion held-vw-v" in out and "champion over time" in out
    assert "300 decisions wait for their attribution window; the next closes" in out
    assert (project.root / "chart.png").read_bytes().startswith(b"\x89PNG")

    rewards = tailormail("rewards", cwd=project.root)
    assert rewards.returncode == 0, rewards.stderr
    assert "held: 0 rewards joined; model unchanged; 300 decisions wait" in rewards.stdout


def test_subjects_and_templates_vary_independently(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", f"sqlite:///{tmp_path}/t.db")
    path = project.add_campaign("joint", policy="uniform")
    text = path.read_text()
    path.write_text(text[: text.index("[[variants]]")] + JOINT)
    engine = project.engine()
    campaign = engine.campaign("joint")
    keys = [v.key for v in campaign.variant_list]
    assert keys == ["short.plain", "short.cards", "long.plain", "long.cards"]
    features = campaign.variant_list[2].features
    assert features == {
        "subject": "long",
        "template": "plain",
        "subject_length": "long",
        "template_layout": "plain",
    }
    project.seed(engine, people=80)
    send_and_reward(engine, "joint", runs=1, rng=random.Random(3), table=_by_template())
    rows = ledger(engine)
    assert {r.variant for r in rows} == set(keys)  # one decision per send, over the joint set
    assert all(r.probability == 0.25 for r in rows)
    engine.close()

    done = tailormail("report", "joint", cwd=project.root)
    assert done.returncode == 0, done.stderr
    assert "CTR by subject" in done.stdout and "CTR by template" in done.stdout
    assert (project.root / "reports" / "joint-ctr.png").is_file()


def _by_template() -> dict[str, dict[str, float]]:
    rates = {k: 0.3 if k.endswith("cards") else 0.05 for k in ("short.plain", "short.cards")}
    rates |= {"long.plain": 0.05, "long.cards": 0.3}
    return {"a": rates, "b": rates}


def test_mixing_variants_with_subjects_is_named(tmp_path: Path) -> None:
    import pytest

    from engine.errors import ConfigError

    project = make_project(tmp_path / "p", f"sqlite:///{tmp_path}/t.db")
    path = project.add_campaign("mixed")
    path.write_text(path.read_text() + JOINT)
    with pytest.raises(ConfigError, match="either variants, or subjects and templates"):
        project.engine()
    path.write_text(path.read_text().split("[[variants]]")[0] + JOINT.split("[[templates]]")[0])
    with pytest.raises(ConfigError, match="subjects and templates each need at least one"):
        project.engine()
