"""The tests mirror the house: one folder per stage, shared helpers in the ``kit`` package.

No test module imports another test module or ``conftest`` (what tests share lives in
tests/kit, the one importable package; only ``tests`` is on pytest's path), no test file is
named after a tool rather than what it tests, and every test file lives in a stage folder.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from kit.project import ROOT

TESTS = ROOT / "tests"
# The stages of docs/architecture.md, one test folder each, and the kit they share.
STAGES = {
    "audience",
    "bench",
    "cli",
    "delivery",
    "demo",
    "feedback",
    "learning",
    "ledger",
    "plugins",
    "project",
    "recommendation",
    "rendering",
    "reports",
    "sending",
    "web",
}
KIT = "kit"
# Names of tools: a test file says what it tests, not which tool runs or drives it.
TOOLS = {"mutants", "mutmut", "mutation", "hypothesis", "pytest", "ruff", "mypy", "coverage"}


def python_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def files_of_tests() -> list[Path]:
    return [p for p in python_files() if p.name.startswith("test_")]


def imported_names(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth, and in scripts it writes as strings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for line in node.value.splitlines():  # a script run in a subprocess
                words = line.split()
                if len(words) >= 2 and words[0] in ("import", "from"):
                    names.add(words[1].rstrip(","))
    return names


def test_no_test_module_imports_another_test_module_or_conftest() -> None:
    offenders = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in python_files()
        for name in imported_names(path)
        if name.split(".")[0].startswith("test_") or name.split(".")[0] == "conftest"
    }
    assert not offenders, sorted(offenders)


def test_the_kit_is_the_one_folder_on_the_path() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["tool"]["pytest"]["ini_options"]["pythonpath"] == ["tests"]
    assert (TESTS / KIT / "__init__.py").is_file()
    assert not any(p.name.startswith("test_") for p in (TESTS / KIT).rglob("*.py"))


def test_no_test_file_is_named_after_a_tool() -> None:
    named = [
        str(path.relative_to(ROOT))
        for path in python_files()
        if TOOLS & set(path.stem.lower().split("_"))
    ]
    assert not named, named


def test_every_test_file_lives_in_a_stage_folder() -> None:
    misplaced = [
        str(path.relative_to(ROOT))
        for path in files_of_tests()
        if path.parent.parent != TESTS or path.parent.name not in STAGES
    ]
    assert not misplaced, misplaced
    loose = [
        str(path.relative_to(ROOT))
        for path in python_files()
        if path.parent == TESTS and path.name != "conftest.py"
    ]
    assert not loose, f"only conftest.py sits in tests/ itself: {loose}"
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders - STAGES - {KIT} == set(), "a folder that is not a stage: add it to STAGES"
