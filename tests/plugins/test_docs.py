"""The plugin surface is enforced: every hook is documented and implemented by a test.

Each hook in ``engine.hookspecs`` needs a ``### name`` section in ``docs/plugins.md`` (with
its signature) and a ``def name(`` hook implementation in some test under ``tests/``; every
name in ``engine.__all__`` must be documented under ``docs/``.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest

import engine
from engine import hookspecs

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PLUGINS_GUIDE = DOCS / "plugins.md"
TESTS = ROOT / "tests"
SPEC_ATTR = f"{hookspecs.PROJECT}_spec"  # what pluggy's HookspecMarker sets

HOOKS: dict[str, Any] = {
    name: function
    for name, function in vars(hookspecs).items()
    if inspect.isfunction(function) and hasattr(function, SPEC_ATTR)
}


def _guide() -> str:
    return PLUGINS_GUIDE.read_text(encoding="utf-8")


def _sections(text: str) -> dict[str, str]:
    """``### name`` heading -> the text up to the next heading of any level."""
    parts = re.split(r"^(#{1,6} .*)$", text, flags=re.MULTILINE)
    sections: dict[str, str] = {}
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        if heading.startswith("### "):
            sections[heading[4:].strip()] = body
    return sections


def _hooks_chapter(text: str) -> str:
    """The ``## Hooks`` chapter: from its heading to the next ``## `` heading."""
    match = re.search(r"^## Hooks\s*$(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"{PLUGINS_GUIDE} has no '## Hooks' chapter"
    return match.group(1)


def _test_sources() -> dict[Path, str]:
    return {
        path: path.read_text(encoding="utf-8")
        for path in sorted(TESTS.rglob("*.py"))
        if path.name != Path(__file__).name
    }


def test_hookspecs_are_found() -> None:
    # Guards the meta-test itself: an empty HOOKS would make every check below vacuous.
    assert len(HOOKS) >= 10, sorted(HOOKS)
    assert "register_policies" in HOOKS and "reward" in HOOKS


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_is_documented(hook: str) -> None:
    sections = _sections(_guide())
    assert hook in sections, f"hook {hook!r} has no '### {hook}' section in {PLUGINS_GUIDE}"
    body = sections[hook]
    block = re.search(r"```python\n(.*?)```", body, flags=re.DOTALL)
    assert block, f"hook {hook!r}: its section in docs/plugins.md has no ```python signature"
    signature = re.search(rf"def {hook}\((.*?)\)\s*(->[^:]*)?:", block.group(1), re.DOTALL)
    assert signature, f"hook {hook!r}: the first ```python block must show 'def {hook}(...)'"
    documented = re.findall(r"(\w+)\s*:", signature.group(1))
    expected = list(inspect.signature(HOOKS[hook]).parameters)
    assert documented == expected, (
        f"hook {hook!r}: docs/plugins.md documents parameters {documented}, "
        f"engine/hookspecs.py declares {expected}"
    )
    if getattr(HOOKS[hook], SPEC_ATTR).get("firstresult"):
        assert "firstresult" in body, f"hook {hook!r} is firstresult; its section must say so"


def test_no_stale_hook_sections() -> None:
    documented = set(_sections(_hooks_chapter(_guide())))
    stale = sorted(documented - set(HOOKS))
    assert not stale, f"docs/plugins.md documents hooks that engine/hookspecs.py lacks: {stale}"


def _implements(hook: str, text: str) -> bool:
    """True when ``text`` defines a function (or method) named ``hook``."""
    return re.search(rf"\bdef {re.escape(hook)}\(", text) is not None


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_is_implemented_by_a_test(hook: str) -> None:
    users = [path.name for path, text in _test_sources().items() if _implements(hook, text)]
    assert users, (
        f"hook {hook!r} has no test: no file under tests/ (other than test_docs.py) "
        f"implements it with 'def {hook}('"
    )


@pytest.mark.parametrize("name", sorted(engine.__all__))
def test_public_name_is_documented(name: str) -> None:
    # Documented means shown as code (`name`, `engine.name`) or given a ### heading.
    pattern = re.compile(rf"(`|### |engine\.){re.escape(name)}\b")
    docs = sorted(DOCS.rglob("*.md"))
    assert any(pattern.search(path.read_text(encoding="utf-8")) for path in docs), (
        f"engine.{name} is public (in engine.__all__) but documented nowhere under docs/"
    )


def test_meta_checks_tell_a_hook_from_a_near_miss() -> None:
    sections = _sections("## Hooks\n### reward\n```python\ndef reward(): ...\n```\n### rewards\n")
    assert set(sections) == {"reward", "rewards"}
    assert _implements("reward", "    @hookimpl\n    def reward(self, engine):\n")
    assert not _implements("reward", "def rewards(engine):\nreward(engine)\n")
