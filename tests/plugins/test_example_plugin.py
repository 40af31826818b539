"""The example distribution installs with pip and plugs in through its entry point.

The installed copy lives in a temporary ``--target`` directory and is only ever imported by
subprocesses with ``PYTHONPATH`` pointing there, so the entry point is discovered through
``importlib.metadata`` exactly as for a real install, and no other test's engine sees it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from engine import Feedback, Policy, Variant, hookimpl
from engine.errors import ConfigError, PluginError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = ROOT / "examples" / "tailormail-example-plugin"
# Build artefacts a source tree may carry; copying them would leak a stale entry point.
_IGNORE = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__")

VARIANTS = [Variant("plain", "s", "plain.html"), Variant("urgent", "s", "urgent.html")]


def _copy_source(destination: Path) -> Path:
    """A clean copy of the example: pip builds in place, so never build in the repo."""
    shutil.copytree(EXAMPLE_DIR, destination, ignore=_IGNORE)
    return destination


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example distribution installed for real with pip into a ``--target`` dir."""
    base = tmp_path_factory.mktemp("example-plugin")
    source = _copy_source(base / "src")
    target = base / "site"
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--disable-pip-version-check",
        "--target",
        str(target),
        str(source),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (
        "pip could not install the example plugin (a setuptools >= 70.1 in the venv builds "
        f"wheels offline):\n{done.stdout}\n{done.stderr}"
    )
    assert list(target.glob("tailormail_example_plugin-*.dist-info")), sorted(target.iterdir())
    return target


def _env(target: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILORMAIL_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "240"  # rich wraps tables at 80 columns without a terminal
    env["TAILORMAIL_SECRET"] = "test-secret-for-the-example-plugin"
    return env


def _python(target: Path, script: str, *args: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        env=_env(target),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"script failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_installed_policy_is_found_by_name(installed: Path, tmp_path: Path) -> None:
    script = """
        import json
        import engine
        from engine import Variant

        variants = [Variant("plain", "s", "plain.html"), Variant("urgent", "s", "urgent.html")]
        rules = [{"when": {"segment": "a"}, "variant": "urgent"}]
        policy = engine.policy("first_match", rules=rules)
        first = policy.choose({"segment": "a"}, variants, seed=12345)
        again = engine.policy("first_match", rules=rules).choose(
            {"segment": "a"}, variants, seed=12345
        )
        print(json.dumps({
            "module": type(policy).__module__,
            "is_policy": isinstance(policy, engine.Policy),
            "first": [first.variant, first.probability, first.pmf, first.policy],
            "again": [again.variant, again.probability, again.pmf, again.policy],
        }))
    """
    out = json.loads(_python(installed, script, cwd=tmp_path))
    assert out["module"] == "tailormail_example_plugin.rules"
    assert out["is_policy"] is True
    variant, probability, pmf, policy = out["first"]
    assert out["again"] == out["first"]  # a seed makes the decision deterministic
    assert policy == "first_match"
    assert variant in {"plain", "urgent"}
    assert pmf == pytest.approx({"plain": 0.05, "urgent": 0.95})
    assert probability == pmf[variant]
    assert sum(pmf.values()) == pytest.approx(1.0)


def test_plugins_command_lists_the_example(installed: Path, tmp_path: Path) -> None:
    script = Path(sysconfig.get_path("scripts")) / "tailormail"
    if script.exists():  # the console script pip wrote for tailormail itself
        command = [sys.executable, str(script), "plugins"]
    else:
        command = [sys.executable, "-c", "from engine.cli.commands import main; main()", "plugins"]
    done = subprocess.run(
        command, env=_env(installed), cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"tailormail plugins failed:\n{done.stdout}\n{done.stderr}"
    rows = [line for line in done.stdout.splitlines() if "example" in line.split()[:3]]
    assert rows, f"'example' is not listed by tailormail plugins:\n{done.stdout}"
    assert "register_policies" in rows[0]
    assert "0.1.0" in rows[0]


CAMPAIGN = """
name = "weekly"
description = "Weekly picks"
items_per_email = 3

[policy]
name = "first_match"
default = "plain"
rules = [{ when = { segment = "a" }, variant = "urgent" }]

[[variants]]
key = "plain"
subject = "Your weekly picks"
template = "plain.html"

[[variants]]
key = "urgent"
subject = "Don't miss this week's picks"
template = "urgent.html"
features = { tone = "urgent" }
"""

TEMPLATE = """<html><body>
<p>Hello {{ recipient.email }}, here is {{ campaign.name }} ({{ variant.key }}).</p>
<ul>{% for item in items %}<li><a href="https://shop.example.org/{{ item.id }}">{{ item.id }}</a>
</li>{% endfor %}</ul>
</body></html>
"""

RUN_SCRIPT = """
    import json
    import sys
    from pathlib import Path

    from sqlalchemy import select

    from engine.app import Engine
    from engine.db import session_scope
    from engine.audience.importer import import_file
    from engine.models import LedgerRow
    from engine.sending.real_run import run_campaign

    project = Path(sys.argv[1])
    with Engine(project_dir=project) as engine:
        import_file(engine.db, "recipients", project / "recipients.csv")
        import_file(engine.db, "items", project / "items.csv")
        summary = run_campaign(engine, "weekly")
        again = run_campaign(engine, "weekly", run_id=summary.run_id)
        with session_scope(engine.db) as session:
            rows = session.scalars(select(LedgerRow).order_by(LedgerRow.id)).all()
        print(json.dumps({
            "sent": summary.sent,
            "resent": again.sent,
            "outbox": [m.to_address for m in getattr(engine, "memory_outbox", [])],
            "rows": [
                {
                    "recipient": r.recipient_id,
                    "status": r.status,
                    "policy": r.policy,
                    "variant": r.variant,
                    "probability": r.probability,
                    "pmf": r.pmf,
                }
                for r in rows
            ],
        }))
"""


def _project(directory: Path, recipients: int) -> Path:
    """A tmp project: memory delivery, one campaign using the ``first_match`` policy."""
    (directory / "config" / "campaigns").mkdir(parents=True)
    (directory / "templates").mkdir()
    (directory / "config" / "tailormail.toml").write_text(
        textwrap.dedent(
            """
            database_url = "sqlite:///tailormail.db"
            from_address = "alerts@example.org"

            [delivery]
            backend = "memory"
            """
        )
    )
    (directory / "config" / "campaigns" / "weekly.toml").write_text(CAMPAIGN)
    for name in ("plain.html", "urgent.html"):
        (directory / "templates" / name).write_text(TEMPLATE)
    lines = ["id,email,segment"] + [
        f"u{i:03d},user{i}@example.org,{'a' if i % 2 else 'b'}" for i in range(recipients)
    ]
    (directory / "recipients.csv").write_text("\n".join(lines) + "\n")
    catalogue = ["id,title"] + [f"i{i},Item {i}" for i in range(5)]
    (directory / "items.csv").write_text("\n".join(catalogue) + "\n")
    return directory


@pytest.mark.slow
def test_campaign_runs_end_to_end_with_the_installed_policy(
    installed: Path, tmp_path: Path
) -> None:
    project = _project(tmp_path / "project", recipients=12)
    out = json.loads(_python(installed, RUN_SCRIPT, str(project), cwd=tmp_path))
    rows = out["rows"]
    assert len(rows) == 12
    assert out["sent"] == 12
    assert out["resent"] == 0  # the ledger guards a second firing of the same run
    assert len(out["outbox"]) == 12
    for row in rows:
        assert row["status"] == "sent"
        assert row["policy"] == "first_match"
        assert row["variant"] in {"plain", "urgent"}
        # Odd recipients are in segment a: the rule sends them "urgent", the rest "plain".
        ruled = "urgent" if int(row["recipient"][1:]) % 2 else "plain"
        assert row["pmf"][ruled] == pytest.approx(0.95)
        assert row["probability"] == pytest.approx(row["pmf"][row["variant"]])


# -- the policy itself, in process (imported from a clean source copy, no entry point) ----


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    source = _copy_source(tmp_path / "src")
    monkeypatch.syspath_prepend(str(source))
    import tailormail_example_plugin

    yield tailormail_example_plugin
    # Forget the module so the next test imports its own fresh copy.
    for name in [m for m in sys.modules if m.startswith("tailormail_example_plugin")]:
        del sys.modules[name]


def test_first_match_follows_its_rules_and_round_trips(example: ModuleType) -> None:
    rules = [
        {"when": {"device": "mobile", "age": ["young", "teen"]}, "variant": "urgent"},
        {"when": {"device": "mobile"}, "variant": "plain"},
    ]
    policy = example.FirstMatchPolicy(rules=rules, default="urgent", explore=0.2)
    assert isinstance(policy, Policy)
    pmfs = {
        "first rule": policy.choose({"device": "mobile", "age": "teen"}, VARIANTS, seed=1).pmf,
        "second rule": policy.choose({"device": "mobile", "age": "old"}, VARIANTS, seed=1).pmf,
        "default": policy.choose({"device": "desktop"}, VARIANTS, seed=1).pmf,
    }
    assert pmfs["first rule"] == pytest.approx({"plain": 0.1, "urgent": 0.9})
    assert pmfs["second rule"] == pytest.approx({"plain": 0.9, "urgent": 0.1})
    assert pmfs["default"] == pytest.approx({"plain": 0.1, "urgent": 0.9})
    seeds = range(200)
    chosen = [policy.choose({"device": "desktop"}, VARIANTS, seed=s).variant for s in seeds]
    assert 160 < chosen.count("urgent") < 200  # sampled from the pmf: exploration happens
    policy.learn([Feedback({}, VARIANTS, "plain", 0.5, 1.0)] * 3)
    restored = example.FirstMatchPolicy(rules=rules)
    restored.load(policy.save())
    assert restored.feedback_seen == 3


def test_first_match_rejects_bad_parameters_and_data(example: ModuleType) -> None:
    with pytest.raises(ValueError, match="explore"):
        example.FirstMatchPolicy(explore=1.5)
    with pytest.raises(TypeError, match="explore"):
        example.FirstMatchPolicy(explore="a lot")
    with pytest.raises(ValueError, match="unknown rule keys"):
        example.FirstMatchPolicy(rules=[{"if": {"a": 1}, "variant": "plain"}])
    with pytest.raises(ValueError, match="variant key"):
        example.FirstMatchPolicy(rules=[{"when": {"a": 1}}])
    with pytest.raises(ValueError, match="no variants"):
        example.FirstMatchPolicy().choose({}, [], seed=1)
    with pytest.raises(ValueError, match="not a saved first_match policy"):
        example.FirstMatchPolicy().load(b'{"format": "tailormail-uniform/1"}')


def test_example_plugin_passed_in_registers_first_match(
    example: ModuleType, tmp_path: Path
) -> None:
    from engine.app import Engine

    project = _project(tmp_path / "project", recipients=1)
    with Engine(project_dir=project, plugins=[example], load_entry_points=False) as eng:
        assert {"first_match", "thompson"} <= set(eng.policies.names())  # no clash
        policy = eng.make_policy(eng.campaign("weekly"))
        assert isinstance(policy, example.FirstMatchPolicy)


def test_a_second_first_match_is_a_clash(example: ModuleType, tmp_path: Path) -> None:
    from engine.app import Engine

    class Impostor:
        @hookimpl
        def register_policies(self, register: object) -> None:
            register("first_match", example.FirstMatchPolicy)  # type: ignore[operator]

    project = _project(tmp_path / "project", recipients=1)
    with pytest.raises((PluginError, ConfigError), match="first_match"):
        Engine(project_dir=project, plugins=[example, Impostor()], load_entry_points=False)


# -- the example's recipe: a campaign names it in its [recipe] table ------------------------

FRESH_CAMPAIGN = """
name = "fresh"
description = "New this week"
items_per_email = 3

[recipe]
name = "newest"
category_attribute = "genre"

[policy]
name = "uniform"

[[variants]]
key = "plain"
subject = "New for you"
template = "plain.html"
"""

FRESH_SCRIPT = """
    import json
    import sys
    from pathlib import Path

    from sqlalchemy import select

    from engine.app import Engine
    from engine.db import session_scope
    from engine.audience.importer import import_file
    from engine.models import LedgerRow
    from engine.sending.real_run import run_campaign

    project = Path(sys.argv[1])
    with Engine(project_dir=project) as engine:
        for kind in ("recipients", "items", "interactions"):
            import_file(engine.db, kind, project / f"{kind}.csv")
        summary = run_campaign(engine, "fresh")
        with session_scope(engine.db) as session:
            rows = session.scalars(select(LedgerRow)).all()
        print(json.dumps({
            "sent": summary.sent,
            "recipe": type(engine.recipes.get("newest")()).__module__,
            "items": {r.recipient_id: r.items for r in rows},
        }))
"""


def _fresh_project(directory: Path) -> Path:
    """Three recipients, six dated items in two genres; ``u1`` has read two poems."""
    _project(directory, recipients=3)
    (directory / "config" / "campaigns" / "weekly.toml").unlink()
    (directory / "config" / "campaigns" / "fresh.toml").write_text(FRESH_CAMPAIGN)
    rows = ["id,title,genre,published"] + [
        f"i{n},Item {n},{'poetry' if n % 2 else 'prose'},2025-0{n}-01" for n in range(1, 7)
    ]
    (directory / "items.csv").write_text("\n".join(rows) + "\n")
    (directory / "interactions.csv").write_text(
        "user_id,item_id,timestamp\nu001,i1,2025-07-01T10:00:00\nu001,i3,2025-07-02T10:00:00\n"
    )
    return directory


@pytest.mark.slow
def test_campaign_uses_the_installed_recipe(installed: Path, tmp_path: Path) -> None:
    project = _fresh_project(tmp_path / "project")
    out = json.loads(_python(installed, FRESH_SCRIPT, str(project), cwd=tmp_path))
    assert out["recipe"] == "tailormail_example_plugin.newest"
    assert out["sent"] == 3
    # Newest first; u001 read poetry (i1, i3, excluded as already seen), so poems lead.
    assert out["items"]["u000"] == ["i6", "i5", "i4"]
    assert out["items"]["u002"] == ["i6", "i5", "i4"]
    assert out["items"]["u001"] == ["i5", "i6", "i4"]


def test_newest_recipe_in_process(example: ModuleType, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from engine import Interaction, Item, Recipe
    from engine.app import Engine

    recipe = example.NewestRecipe()
    assert isinstance(recipe, Recipe)
    items = [Item("old", {"category": "a", "published": "2024-01-01"})]
    items += [Item("new", {"category": "b", "published": "2025-01-01"}), Item("undated")]
    seen = datetime(2024, 6, 1, tzinfo=UTC)
    recipe.fit([Interaction("me", "old", seen), Interaction("me", "undated", seen)], items)
    assert recipe.recommend("someone", 5) == ["new", "undated", "old"]
    assert recipe.recommend("me", 2, exclude=["undated"]) == ["old", "new"]
    assert recipe.similar("new", 3) == [] and recipe.similar("nope", 3) == []
    with pytest.raises(ValueError, match="date_attribute"):
        example.NewestRecipe(date_attribute="")

    project = _fresh_project(tmp_path / "project")
    with Engine(project_dir=project, plugins=[example], load_entry_points=False) as eng:
        assert isinstance(eng.recipes.get("newest")(), example.NewestRecipe)
    broken = _fresh_project(tmp_path / "broken")
    campaign = broken / "config" / "campaigns" / "fresh.toml"
    campaign.write_text(campaign.read_text().replace('"genre"', '""'))
    with pytest.raises(ConfigError, match="newest"):
        Engine(project_dir=broken, plugins=[example], load_entry_points=False)
