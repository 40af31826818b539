"""Dependencies say what they are for, each once, and follow the written bounding policy.

The policy is docs/guide.md's "Dependencies" section: every entry has a lower bound; an
upper bound, always ``<next major``, only for the libraries the section lists. Runtime
dependencies are imported by the engine or its plugins; every extra's entry is imported by
some code of the project, or run as a command by the Makefile, or listed here with why it is
used without an import.
"""

from __future__ import annotations

import ast
import re
import tomllib
from functools import cache

from kit.project import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
SELF = canonicalize_name(PROJECT["name"])

# Where a distribution's import name is not its name with ``-`` as ``_``.
IMPORT_NAMES = {
    "css-inline": "css_inline",
    "dkimpy": "dkim",
    "prometheus-client": "prometheus_client",
    "psycopg2-binary": "psycopg2",
    "scikit-learn": "sklearn",
}
# Entries of extras used without an import, and how they are used.
USED_WITHOUT_IMPORT = {
    "psycopg2-binary": "SQLAlchemy loads it for postgresql+psycopg2:// URLs",
    "pytest-timeout": "a pytest plugin (timeout in [tool.pytest.ini_options])",
    "pytest-xdist": "a pytest plugin (make unit runs pytest -n)",
    "setuptools": "the build backend of pip wheel --no-build-isolation in the tests",
}
# Entries of extras that are commands the Makefile runs, and the command.
COMMANDS = {"ruff": "ruff", "mypy": "mypy", "import-linter": "lint-imports", "mutmut": "mutmut"}


def requirements() -> dict[str, list[Requirement]]:
    """Every list of requirements by where it is: ``runtime`` or the extra's name."""
    lists = {"runtime": PROJECT["dependencies"], **PROJECT["optional-dependencies"]}
    return {where: [Requirement(line) for line in entries] for where, entries in lists.items()}


def entries() -> list[tuple[str, Requirement]]:
    """Every requirement with where it is, references to our own extras left out."""
    return [
        (where, req)
        for where, reqs in requirements().items()
        for req in reqs
        if canonicalize_name(req.name) != SELF
    ]


@cache
def imports_under(*folders: str) -> frozenset[str]:
    """The top-level names every module under ``folders`` imports, at any depth."""
    names: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module.split(".")[0])
    return frozenset(names)


def import_name(req: Requirement) -> str:
    name = canonicalize_name(req.name)
    return IMPORT_NAMES.get(name, name.replace("-", "_"))


def bounded_in_the_guide() -> set[str]:
    """The libraries docs/guide.md's "Dependencies" section allows an upper bound."""
    guide = (ROOT / "docs" / "guide.md").read_text(encoding="utf-8")
    section = guide.split("\n## Dependencies\n", 1)[1].split("\n## ", 1)[0]
    return {canonicalize_name(name) for name in re.findall(r"^- `([\w.-]+)`", section, re.M)}


def test_no_name_is_listed_twice() -> None:
    seen: dict[str, str] = {}
    twice = []
    for where, req in entries():
        name = canonicalize_name(req.name)
        if name in seen:
            twice.append(f"{name} in {seen[name]} and {where}")
        seen[name] = where
    assert not twice, twice


def test_our_own_extras_named_in_an_extra_exist() -> None:
    extras = set(PROJECT["optional-dependencies"])
    for reqs in requirements().values():
        for req in reqs:
            if canonicalize_name(req.name) == SELF:
                assert req.extras <= extras, req.extras - extras


def test_every_runtime_dependency_is_imported_by_the_engine_or_its_plugins() -> None:
    imported = imports_under("engine", "plugins")
    unused = [str(req) for req in requirements()["runtime"] if import_name(req) not in imported]
    assert not unused, unused


def test_every_extra_entry_is_used() -> None:
    imported = imports_under("engine", "plugins", "tests", "bench", "tools")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    unused = []
    for where, req in entries():
        name = canonicalize_name(req.name)
        if where == "runtime" or name in USED_WITHOUT_IMPORT:
            continue
        if name in COMMANDS:
            if f"$(BIN)/{COMMANDS[name]}" not in makefile:
                unused.append(f"{where}: {req} (the Makefile never runs {COMMANDS[name]})")
        elif import_name(req) not in imported:
            unused.append(f"{where}: {req} (nothing imports {import_name(req)})")
    assert not unused, unused


def test_every_entry_follows_the_bounding_policy() -> None:
    bounded = bounded_in_the_guide()
    assert bounded, "docs/guide.md's Dependencies section lists no bounded library"
    wrong = []
    for where, req in entries():
        name = canonicalize_name(req.name)
        lower = [s for s in req.specifier if s.operator == ">="]
        upper = [s for s in req.specifier if s.operator == "<"]
        others = [s for s in req.specifier if s.operator not in (">=", "<")]
        if len(lower) != 1 or others:
            wrong.append(f"{where}: {req} needs one lower bound (>=) and nothing else")
            continue
        major = int(lower[0].version.split(".")[0])
        if name in bounded and [s.version for s in upper] != [str(major + 1)]:
            wrong.append(f"{where}: {req} needs the upper bound <{major + 1} (next major)")
        if name not in bounded and upper:
            wrong.append(f"{where}: {req} has an upper bound the policy does not allow")
    assert not wrong, wrong
    listed = {canonicalize_name(req.name) for _, req in entries()}
    assert bounded <= listed, f"the guide bounds libraries we do not use: {bounded - listed}"


def test_the_makefile_installs_extras_that_exist() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    named = re.findall(r"pip install --quiet -e '?\.\[([\w,]+)\]", makefile)
    assert named, "make install names no extras"
    for extras in named:
        assert set(extras.split(",")) <= set(PROJECT["optional-dependencies"]), extras


def test_the_demo_installs_the_runtime_only() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo: install-runtime$", makefile, re.M)
    assert re.search(r"^\t\$\(BIN\)/pip install --quiet -e \.$", makefile, re.M)


def test_lists_here_name_what_the_project_lists() -> None:
    listed = {canonicalize_name(req.name) for _, req in entries()}
    for table in (IMPORT_NAMES, USED_WITHOUT_IMPORT, COMMANDS):
        assert set(table) <= listed, set(table) - listed
