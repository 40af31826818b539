"""``tailormail evaluate``: candidate policies estimated on the ledger, and the same
estimates from the file ``tailormail export`` wrote (JSONL and DSJSON)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from kit.champion import make_project, send_and_reward
from kit.cli import tailormail

from engine.learning.evaluate import evaluate
from engine.learning.export import export_decisions
from engine.learning.logged import from_ledger, read_log

CANDIDATES = [("vw", {}), ("vw", {"epsilon": 0.3, "interactions": []})]


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose uniform campaign sent 2 x 150 emails, clicked and rewarded, and
    its exports in ``export.jsonl`` and ``export.dsjson``."""
    root = tmp_path_factory.mktemp("evaluate")
    project = make_project(root / "p", f"sqlite:///{root}/t.db")
    engine = project.engine()
    project.seed(engine, people=150)
    send_and_reward(engine, "alerts", runs=2, rng=random.Random(2))
    for fmt in ("jsonl", "dsjson"):
        with (project.root / f"export.{fmt}").open("w") as out:
            assert export_decisions(engine, "alerts", fmt, out) == 300
    engine.close()
    return project.root


def test_evaluating_an_export_gives_the_estimates_of_the_ledger(logged: Path) -> None:
    from kit.project import Project

    project = Project.__new__(Project)
    project.root, project.db_url = logged, f"sqlite:///{logged.parent}/t.db"
    engine = project.engine()

    def make(name: str, params: dict[str, object]) -> object:
        return engine.policies.get(name)(**params)

    ledger = [r.as_dict() for r in evaluate(from_ledger(engine, "alerts"), CANDIDATES, make)]
    for fmt in ("jsonl", "dsjson"):
        decisions = read_log(logged / f"export.{fmt}")
        assert [r.as_dict() for r in evaluate(decisions, CANDIDATES, make)] == ledger, fmt
    engine.close()
    logged_row, uniform = ledger[0], ledger[1]
    assert logged_row["ips"]["value"] == pytest.approx(logged_row["snips"]["value"])
    assert uniform["ips"]["value"] == pytest.approx(logged_row["ips"]["value"])  # uniform logs
    assert all(row[k]["ci_low"] < row[k]["ci_high"] for row in ledger for k in ("ips", "dr"))


def test_the_command_on_the_ledger_and_on_the_export_agree(logged: Path) -> None:
    args = ("--policy", "vw", "--param", "epsilon=0.3", "--json")
    on_ledger = tailormail("evaluate", "alerts", *args, cwd=logged)
    assert on_ledger.returncode == 0, on_ledger.stderr
    for fmt in ("jsonl", "dsjson"):
        on_file = tailormail("evaluate", "--log", f"export.{fmt}", *args, cwd=logged)
        assert on_file.returncode == 0, on_file.stderr
        assert json.loads(on_file.stdout) == json.loads(on_ledger.stdout)
    table = tailormail("evaluate", "alerts", cwd=logged)
    assert table.returncode == 0 and "uniform split" in table.stdout
    assert "DR [95% CI]" in table.stdout and "300 decisions" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "needs a CAMPAIGN or --log FILE"),
        (("--log", "nowhere.jsonl"), "no such file"),
        (("alerts", "--param", "epsilon"), "use NAME=VALUE"),
        (("alerts", "--param", "epsilon=2"), "--param needs a --policy"),
        (("alerts", "--policy", "nope"), "nope"),
        (("alerts", "--policy", "vw", "--param", "epsilon=7"), "epsilon"),
        (("--log", "config/tailormail.toml"), "tailormail.toml:1: not a logged decision"),
    ],
)
def test_mistakes_are_named(logged: Path, args: tuple[str, ...], message: str) -> None:
    done = tailormail("evaluate", *args, cwd=logged)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr


def test_train_models_and_rollback_as_a_user_runs_them(tmp_path: Path) -> None:
    from kit.champion import set_policy

    project = make_project(tmp_path / "p", f"sqlite:///{tmp_path}/t.db")
    path = project.add_campaign("learn", policy="vw")
    engine = project.engine()
    project.seed(engine, people=100)
    send_and_reward(engine, "learn", runs=2, rng=random.Random(4), learn=True)
    engine.close()
    root = project.root

    listed = tailormail("models", "learn", cwd=root)
    assert listed.returncode == 0, listed.stderr
    assert "learn-vw-v1" in listed.stdout and "learn-vw-v2" in listed.stdout
    trained = tailormail("train", "learn", cwd=root)
    assert trained.returncode == 0, trained.stderr
    assert "champion's settings (retrained)" in trained.stdout
    for tried in ("exploration='squarecb'", "interactions=['UA', 'UUA']", "learning_rate=0.5"):
        assert tried in trained.stdout

    back = tailormail("rollback", "learn", "learn-vw-v1", cwd=root)
    assert back.returncode == 0, back.stderr
    assert "learn-vw-v1 is the champion again" in back.stdout
    listed = tailormail("models", "learn", cwd=root)
    assert "champion (pinned)" in listed.stdout and "rollback" in listed.stdout
    busy = tailormail("train", "learn", cwd=root)
    assert "pinned by a rollback" in busy.stdout
    assert "released learn-vw-v1" in tailormail("rollback", "learn", "--release", cwd=root).stdout

    wrong = tailormail("rollback", "learn", "learn-vw-v99", cwd=root)
    assert wrong.returncode == 2 and "no stored model 'learn-vw-v99'" in wrong.stderr
    assert "learn-vw-v1" in wrong.stderr
    unknown = tailormail("models", "nope", cwd=root)
    assert unknown.returncode == 2 and "unknown campaign 'nope'" in unknown.stderr

    # A changed [policy] in the campaign file becomes a challenger, not ignored.
    set_policy(path, '[policy]\nname = "vw"\nepsilon = 0.3')
    engine = project.engine()
    send_and_reward(engine, "learn", runs=1, rng=random.Random(5), learn=True, start=2)
    from kit.champion import versions

    kinds = [(row.kind, row.settings) for row in versions(engine, "learn")]
    assert ("settings", {"name": "vw", "params": {"epsilon": 0.3}}) in kinds, kinds
    engine.close()
