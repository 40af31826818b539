"""Module paths that moved when the engine was laid out by stage (issue 19), for one release.

Importing an old path (``engine.pipeline``, ``engine.webhooks``, ...) still works: it gives a
module that forwards every name to the new home and warns once with a ``DeprecationWarning``
saying where to import from. A recipe fit pickled under an old class path loads the same
way. The three old modules whose name is now a package (``engine.audience``, ``engine.cli``,
``engine.demo``) forward their old names from the package's ``__init__``
(:func:`forward`). CHANGELOG.md lists every moved path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from collections.abc import Sequence
from typing import Any

MOVED: dict[str, str] = {
    "engine.audience_empty": "engine.audience.empty",
    "engine.cli_learning": "engine.cli.learning",
    "engine.cli_privacy": "engine.cli.privacy",
    "engine.cli_report": "engine.cli.report_tables",
    "engine.cli_runs": "engine.cli.runs_table",
    "engine.cli_schedule": "engine.cli.schedule",
    "engine.cli_secret": "engine.cli.secret",
    "engine.cli_sending": "engine.cli.sending",
    "engine.cli_support": "engine.cli.support",
    "engine.compaction": "engine.audience.compaction",
    "engine.compliance": "engine.audience.compliance",
    "engine.deliverability": "engine.sending.deliverability",
    "engine.demo_content": "engine.demo.content",
    "engine.evaluation": "engine.learning.estimators",
    "engine.events": "engine.feedback.events",
    "engine.export": "engine.learning.export",
    "engine.forgetting": "engine.audience.forgetting",
    "engine.forgetting_key": "engine.audience.forgetting_key",
    "engine.import_checks": "engine.audience.checks",
    "engine.importer": "engine.audience.importer",
    "engine.item_report": "engine.reports.items",
    "engine.leader": "engine.sending.leader",
    "engine.learning.lift": "engine.reports.lift",
    "engine.learning.report": "engine.reports.learning",
    "engine.listening": "engine.cli.listening",
    "engine.personal_files": "engine.audience.personal_files",
    "engine.pipeline": "engine.sending.pipeline",
    "engine.rehearsal": "engine.sending.rehearsal",
    "engine.rehearsal_effects": "engine.sending.rehearsal_effects",
    "engine.rehearsal_record": "engine.sending.rehearsal_record",
    "engine.report": "engine.reports.variants",
    "engine.resources": "engine.cli.resources",
    "engine.rewards": "engine.feedback.rewards",
    "engine.run_effects": "engine.sending.run_effects",
    "engine.runs": "engine.sending.runs",
    "engine.scheduler": "engine.sending.scheduler",
    "engine.shard_tasks": "engine.sending.shard_tasks",
    "engine.shards": "engine.sending.shards",
    "engine.simulation": "engine.demo.simulation",
    "engine.tracking": "engine.feedback.bots",
    "engine.web.tokens": "engine.tokens",
    "engine.web.eventlog": "engine.feedback.eventlog",
    "engine.web.intake": "engine.feedback.intake",
    "engine.webhooks": "engine.feedback.webhooks",
}
"""Old dotted module path -> where it lives now."""

NAMES_MOVED: dict[tuple[str, str], str] = {
    ("engine.pipeline", "run_campaign"): "engine.sending.real_run",
    ("engine.run_effects", "real_effects"): "engine.sending.real_run",
}
"""(old module path, name) -> the module the name lives in now, when not ``MOVED``'s."""


def _warn(old: str, new: str, stacklevel: int = 3) -> None:
    # the default stacklevel names the caller's import statement, not this module
    warnings.warn(
        f"{old} moved: import it from {new} (the old path goes in the next release)",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


class _Forwarder(types.ModuleType):
    """The module an old path imports: every attribute read from the moved module."""

    def __getattr__(self, name: str) -> Any:
        home = NAMES_MOVED.get((self.__name__, name))
        if home is None:
            return getattr(importlib.import_module(MOVED[self.__name__]), name)
        _warn(f"{self.__name__}.{name}", home)  # moved on from the module's new home
        return getattr(importlib.import_module(home), name)

    def __dir__(self) -> list[str]:
        return dir(importlib.import_module(MOVED[self.__name__]))


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths in :data:`MOVED` and loads each as a :class:`_Forwarder`."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        _warn(spec.name, MOVED[spec.name])
        importlib.import_module(MOVED[spec.name])
        return _Forwarder(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the forwarder reads the moved module."""


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (``engine/__init__.py`` calls it)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())


def forward(package: str, old: str, new: str, name: str) -> Any:
    """A package ``__getattr__``'s answer: ``name`` from the module that was ``old``, warned.

    Only the moved module's own public names forward; anything else (a submodule not yet
    imported, a misspelling) is an ``AttributeError`` as usual.
    """
    # a submodule's name is never forwarded: ``from engine.cli import sending`` imports it
    if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is None:
        module = importlib.import_module(new)
        value = getattr(module, name, None)
        if value is not None and not isinstance(value, types.ModuleType):
            # stacklevel 4: past the package's ``__getattr__`` to the importing line
            _warn(f"{old}.{name}", new, stacklevel=4)
            return value
    raise AttributeError(f"module {package!r} has no attribute {name!r}")
