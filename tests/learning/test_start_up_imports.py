"""Starting an Engine loads no learning: the start-up checks read the registries, and the
champion queries (``engine.learning.champions``) are imported only by what decides.

Each check runs in a fresh interpreter (a subprocess), on a project made by
``tailormail init``, so no other test's imports count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import json, sys
from pathlib import Path
from engine.app import Engine

with Engine(project_dir=Path(sys.argv[1])) as engine:
    engine.campaign("weekly-picks")
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after_start(project: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(project)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    modules: list[str] = json.loads(done.stdout.splitlines()[-1])
    return modules


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The modules an interpreter holds after constructing the sample project's Engine."""
    root = tmp_path_factory.mktemp("init")
    made = subprocess.run(
        [sys.executable, "-m", "engine", "init", "shop"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    return _modules_after_start(root / "shop")


def test_constructing_an_engine_imports_no_learning(started: list[str]) -> None:
    assert [m for m in started if m.startswith("engine.learning")] == []
    assert "engine.app" in started  # the probe did construct it


def test_constructing_an_engine_imports_no_numpy_or_vowpalwabbit(started: list[str]) -> None:
    heavy = [m for m in started if m.split(".")[0] in ("numpy", "vowpalwabbit")]
    assert heavy == []
