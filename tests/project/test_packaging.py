"""The wheel carries what an installed tailormail needs beyond its code."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from kit.project import ROOT


def test_the_wheel_ships_the_migrations_and_the_sample_project(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a clean copy: setuptools would reuse a stale build/
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", "demo-run", ".*_cache"
        ),
    )
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("tailormail-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = "tailormail-0.1.0.data/data/share/tailormail/"
    for needed in (
        "engine/migrations/env.py",
        "engine/migrations/script.py.mako",
        "engine/migrations/versions/0001_initial_schema.py",
        "engine/py.typed",
        data + "config/tailormail.toml",
        data + "config/campaigns/weekly-picks.toml",
        data + "templates/weekly/plain.html",
        data + "templates/demo/visual.html",
    ):
        assert needed in names, needed
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]
