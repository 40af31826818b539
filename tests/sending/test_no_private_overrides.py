"""No class overrides a private method of a project base class (docs/architecture.md).

Suppressing a side effect by overriding a base's private method is how a rehearsal once
sent real mail: the next code path (a shard, a retry) built the real object again. A
subclass extends its base through public methods (``fit_model``), and a run's side
effects are passed in (``engine.sending.run_effects``). This test reads the source of
``engine/`` and ``plugins/`` (no import), resolving base classes through imports.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.models import utcnow

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "plugins")


@dataclass
class ClassInfo:
    """One class of the project as its source defines it."""

    module: str
    name: str
    line: int
    bases: list[ast.expr]
    private: set[str] = field(default_factory=set)


@dataclass
class Module:
    """What a module defines and imports, by the names its code uses."""

    name: str
    classes: dict[str, ClassInfo] = field(default_factory=dict)
    imported: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    """Local name -> (module, name in it; None: the module itself)."""


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def read_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Module]:
    """Every module under ``packages`` of ``root``: its classes and its imports."""
    modules: dict[str, Module] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            name = _module_name(path, root)
            module = modules[name] = Module(name)
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom):
                    source = _absolute(name, path.name == "__init__.py", node)
                    for alias in node.names:
                        module.imported[alias.asname or alias.name] = (source, alias.name)
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.asname:
                            module.imported[alias.asname] = (alias.name, None)
                        else:
                            top = alias.name.split(".")[0]
                            module.imported[top] = (top, None)
            for node in tree.body:
                if isinstance(node, ast.ClassDef):
                    info = ClassInfo(name, node.name, node.lineno, list(node.bases))
                    info.private = {
                        item.name
                        for item in node.body
                        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                        and _is_private(item.name)
                    }
                    module.classes[node.name] = info
    return modules


def _resolve(modules: dict[str, Module], module: str, name: str, seen: int = 0) -> ClassInfo | None:
    """The project class ``name`` means in ``module`` (following imports), if any."""
    found = modules.get(module)
    if found is None or seen > 20:
        return None
    if name in found.classes:
        return found.classes[name]
    if name in found.imported:
        source, imported = found.imported[name]
        if imported is None:
            return None
        if f"{source}.{imported}" in modules:  # ``from package import module``
            return None
        return _resolve(modules, source, imported, seen + 1)
    return None


def _base(modules: dict[str, Module], module: str, expr: ast.expr) -> ClassInfo | None:
    if isinstance(expr, ast.Subscript):  # Generic[T], Base[Thing]
        return _base(modules, module, expr.value)
    if isinstance(expr, ast.Name):
        return _resolve(modules, module, expr.id)
    if isinstance(expr, ast.Attribute):
        parts: list[str] = []
        node: ast.expr = expr
        while isinstance(node, ast.Attribute):
            parts.insert(0, node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        head = modules.get(module)
        if head is None or node.id not in head.imported:
            return None
        source, imported = head.imported[node.id]
        path = [source] + ([imported] if imported else []) + parts[:-1]
        return _resolve(modules, ".".join(path), parts[-1])
    return None


def _ancestors(modules: dict[str, Module], info: ClassInfo) -> list[ClassInfo]:
    found: list[ClassInfo] = []
    todo = [b for expr in info.bases if (b := _base(modules, info.module, expr)) is not None]
    while todo:
        base = todo.pop()
        if base in found or base is info:
            continue
        found.append(base)
        todo += [b for e in base.bases if (b := _base(modules, base.module, e)) is not None]
    return found


def private_overrides(modules: dict[str, Module]) -> list[str]:
    """Each private method a project class defines that a project base class defines too."""
    overrides: list[str] = []
    for module in modules.values():
        for info in module.classes.values():
            for base in _ancestors(modules, info):
                for method in sorted(info.private & base.private):
                    overrides.append(
                        f"{info.module}.{info.name}.{method} (line {info.line}) overrides "
                        f"{base.module}.{base.name}.{method}"
                    )
    return sorted(overrides)


def test_no_class_overrides_a_private_method_of_a_project_base_class() -> None:
    modules = read_modules(ROOT)
    assert len(modules) > 100 and any(m.classes for m in modules.values())
    assert private_overrides(modules) == []


def test_the_check_finds_an_override_through_an_import(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "base.py").write_text(
        "class Run:\n    def _send(self): ...\n    def __init__(self): ...\n"
    )
    (tmp_path / "pkg" / "again.py").write_text("from pkg.base import Run\n")
    (tmp_path / "pkg" / "dry.py").write_text(
        "from pkg import again\n"
        "from .again import Run as Base\n"
        "class Dry(Base):\n    def _send(self): ...\n    def __init__(self): ...\n"
        "class Other(again.Run):\n    def send(self): ...\n"
        "class Deeper(Dry):\n    def _send(self): ...\n"
    )
    found = private_overrides(read_modules(tmp_path, ("pkg",)))
    assert found == [
        "pkg.dry.Deeper._send (line 8) overrides pkg.base.Run._send",
        "pkg.dry.Deeper._send (line 8) overrides pkg.dry.Dry._send",
        "pkg.dry.Dry._send (line 3) overrides pkg.base.Run._send",
    ]


def test_a_recipe_written_for_the_old_private_fit_hook_still_fits_with_a_warning() -> None:
    from engine.types import Interaction
    from plugins.recipes.base import ScoredRecipe
    from plugins.recipes.history import History

    with pytest.warns(DeprecationWarning, match="Legacy._fit: define fit_model instead"):

        class Legacy(ScoredRecipe):
            def _fit(self, history: History) -> None:
                self.fitted = history.n_items

    recipe = Legacy()
    now = utcnow()
    recipe.fit([Interaction("u1", "i1", now), Interaction("u1", "i2", now)])
    assert recipe.fitted == 2 and recipe.recommend("u2", 1)
