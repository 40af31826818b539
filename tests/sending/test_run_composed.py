"""A run's side effects are passed in: the run has no default, and the real ones are
composed in one place (``engine.sending.real_run``), shards included."""

from __future__ import annotations

import importlib
import pickle
import sys

import pytest
from kit.project import Project

from engine.sending.pipeline import CampaignRun
from engine.sending.real_run import real_effects, real_run, real_shards, run_campaign
from engine.sending.shards import ShardHost


def test_a_run_built_without_effects_is_refused(project: Project) -> None:
    engine = project.engine()
    with pytest.raises(TypeError, match="effects"):
        CampaignRun(engine, engine.campaign("alerts"), "r1")  # type: ignore[call-arg]


def test_a_real_run_gets_the_real_effects_and_its_shards_build_real_runs(
    project: Project,
) -> None:
    engine = project.engine()
    run = real_run(engine, engine.campaign("alerts"), "r1")
    assert run.effects.shards is real_shards and run.effects.shares_recipe_fit
    # A pool process gets the host pickled: the factory travels with it, by reference.
    host = pickle.loads(pickle.dumps(ShardHost.of(engine, real_run)))
    assert host.make_run is real_run


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("engine.pipeline", "run_campaign", run_campaign),
        ("engine.run_effects", "real_effects", real_effects),
    ],
)
def test_names_that_moved_on_from_the_new_home_still_import_from_the_old_path(
    old: str, name: str, new: object
) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning):
        module = importlib.import_module(old)
    moved = f"{old}.{name} moved: import it from engine.sending.real_run"
    with pytest.warns(DeprecationWarning, match=moved):
        assert getattr(module, name) is new
