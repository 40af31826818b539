"""Importing tailormail is light: an import inside a function says why, and neither the
command line nor any plugin module loads the heavy libraries before a command needs them.

Web processes and Celery workers load every plugin module too, and ``tailormail --version``
or ``runs`` should start about as fast as Python imports SQLAlchemy and Typer.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from engine.plugins import DEFAULT_PLUGINS

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "scipy", "vowpalwabbit", "alembic", "matplotlib", "celery", "botocore")
"""Libraries no plugin module nor the command line's start may import."""
MARK = "# lazy:"


def _imports_in_functions(tree: ast.Module) -> Iterator[tuple[list[ast.stmt], int]]:
    """Every import statement inside a function: its statement list and its index."""
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for body in ast.walk(function):
            for field in ("body", "orelse", "finalbody", "handlers"):
                statements = getattr(body, field, None)
                if not isinstance(statements, list):
                    continue
                for index, statement in enumerate(statements):
                    if isinstance(statement, ast.Import | ast.ImportFrom):
                        yield statements, index


def _says_why(lines: list[str], statements: list[ast.stmt], index: int) -> bool:
    """A ``# lazy:`` comment on the import's first line, or in the comment block just
    above the run of imports it belongs to."""
    if MARK in lines[statements[index].lineno - 1]:
        return True
    first = index
    while first > 0 and isinstance(statements[first - 1], ast.Import | ast.ImportFrom):
        first -= 1
    if MARK in lines[statements[first].lineno - 1]:
        return True
    above = statements[first].lineno - 2
    while above >= 0 and lines[above].strip().startswith("#"):
        if MARK in lines[above]:
            return True
        above -= 1
    return False


def unexplained_imports(*folders: Path, root: Path = ROOT) -> list[str]:
    """``path:line`` (from ``root``) of every function-level import without a reason."""
    found = []
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            lines = source.splitlines()
            for statements, index in _imports_in_functions(ast.parse(source)):
                if not _says_why(lines, statements, index):
                    line = statements[index].lineno
                    found.append(f"{path.relative_to(root)}:{line}: {lines[line - 1].strip()}")
    return sorted(set(found))


def _report(offenders: list[str]) -> str:
    return "function-level imports without '# lazy: why':\n" + "\n".join(offenders)


def test_every_import_inside_a_function_of_the_cli_and_plugins_says_why() -> None:
    offenders = unexplained_imports(ROOT / "engine" / "cli", ROOT / "plugins")
    loading = ("engine/__init__.py", "engine/plugins.py", "engine/db.py", "engine/hookspecs.py")
    everywhere = unexplained_imports(ROOT / "engine")
    offenders += [found for found in everywhere if found.startswith(loading)]
    assert not offenders, _report(offenders)


def test_every_import_inside_a_function_says_why() -> None:
    offenders = unexplained_imports(ROOT / "engine", ROOT / "plugins")
    assert not offenders, _report(offenders)


def test_the_check_finds_an_import_without_a_reason(tmp_path: Path) -> None:
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "mod.py").write_text(
        "def quiet():\n    import json\n\n"
        "def explained():\n    # lazy: numpy is heavy\n    import numpy\n    import scipy\n\n"
        "def inline():\n    import csv  # lazy: rarely used\n",
        encoding="utf-8",
    )
    offenders = unexplained_imports(folder, root=tmp_path)
    assert offenders == ["pkg/mod.py:2: import json"]


def loaded_after(*statements: str) -> list[str]:
    """The heavy libraries a fresh interpreter holds after running ``statements``."""
    code = "; ".join(
        [
            "import sys, json",
            *statements,
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout.splitlines()[-1])
    return found


def test_the_command_line_and_every_plugin_module_import_light() -> None:
    imports = ["import engine.cli.commands", *(f"import {name}" for name in DEFAULT_PLUGINS)]
    assert loaded_after(*imports) == []


def test_the_command_line_learns_its_commands_without_importing_them() -> None:
    assert (
        loaded_after(
            "from engine.cli.command_group import collect_commands",
            "assert 'recommend' in collect_commands() and 'runs' in collect_commands()",
        )
        == []
    )


def test_every_command_module_imports_light() -> None:
    # what `tailormail --help` imports: each command's module, none of its heavy work
    assert (
        loaded_after(
            "from engine.cli.command_group import collect_commands, load_target",
            "[load_target(target) for target in collect_commands().values()]",
        )
        == []
    )
