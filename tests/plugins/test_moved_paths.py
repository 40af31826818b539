"""Module paths that moved when the engine was laid out by stage keep working for one release.

Old imports give the moved names with a ``DeprecationWarning`` naming the new home; a pickle
that names a class under its old path loads; plugin modules written against the old paths
still register.
"""

from __future__ import annotations

import importlib
import pickle
import sys
import warnings
from pathlib import Path

import pytest
from kit.project import Project

from engine.learning.estimators import Estimate
from engine.moved import MOVED


def _fresh(name: str) -> None:
    # each old path warns when first imported in a process: forget it to import it again
    sys.modules.pop(name, None)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_every_old_module_path_imports_with_a_warning_naming_the_new_one(old: str) -> None:
    _fresh(old)
    with pytest.warns(DeprecationWarning, match=f"{old} moved: import it from {MOVED[old]}"):
        module = importlib.import_module(old)
    new = importlib.import_module(MOVED[old])
    public = [name for name in vars(new) if not name.startswith("_")]
    assert public, f"{MOVED[old]} has no public names"
    for name in public:
        assert getattr(module, name) is getattr(new, name)


def test_old_names_read_from_the_packages_that_replaced_modules() -> None:
    from engine.audience.filters import stream_audience
    from engine.cli.commands import app, main
    from engine.demo.tour import run_demo

    with pytest.warns(
        DeprecationWarning, match="engine.cli.main moved: import it from engine.cli.commands"
    ):
        from engine.cli import main as old_main
    with pytest.warns(DeprecationWarning, match="import it from engine.cli.commands"):
        from engine.cli import app as old_app
    with pytest.warns(DeprecationWarning, match="import it from engine.audience.filters"):
        from engine.audience import stream_audience as old_stream
    with pytest.warns(DeprecationWarning, match="import it from engine.demo.tour"):
        from engine.demo import run_demo as old_run_demo
    assert (old_main, old_app, old_stream, old_run_demo) == (main, app, stream_audience, run_demo)


def test_a_misspelt_name_is_still_an_attribute_error() -> None:
    import engine.cli

    with pytest.raises(AttributeError, match="engine.cli' has no attribute 'mian'"):
        engine.cli.mian  # noqa: B018


def test_the_moved_mime_module_of_the_delivery_plugins_still_imports() -> None:
    from engine.mime import build_mime

    _fresh("plugins.delivery.mime")
    with pytest.warns(
        DeprecationWarning, match="plugins.delivery.mime moved: import it from engine.mime"
    ):
        old = importlib.import_module("plugins.delivery.mime")
    assert old.build_mime is build_mime


def test_a_pickle_naming_a_class_by_its_old_path_loads() -> None:
    # protocol 0 names classes as text, so the stored path can be set to the old one
    stored = pickle.dumps(Estimate(0.5, 0.25, 0.75, 10), protocol=0)
    assert b"engine.learning.estimators" in stored
    old = stored.replace(b"engine.learning.estimators", b"engine.evaluation")
    _fresh("engine.evaluation")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert pickle.loads(old) == Estimate(0.5, 0.25, 0.75, 10)


def test_a_submodule_of_a_package_that_replaced_a_module_imports_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        from engine.audience import importer
        from engine.cli import sending

    assert sending.__name__ == "engine.cli.sending"
    assert importer.__name__ == "engine.audience.importer"


PLUGIN_ON_OLD_PATHS = """
from engine import hookimpl
from engine.cli_support import ProjectOption, open_engine
from engine.webhooks import WebhookHandler, WebhookVerificationError
from plugins.delivery.mime import message_bytes


class AcmeMailHandler(WebhookHandler):
    provider = "acme"

    def verify(self, headers, body):
        raise WebhookVerificationError("no signature")

    def parse(self, headers, body):
        return []


@hookimpl
def register_webhook_handlers(register):
    register("acme", AcmeMailHandler())
"""


def test_a_plugin_written_against_the_paths_docs_gave_still_registers(
    sqlite_project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "acme_plugin.py").write_text(PLUGIN_ON_OLD_PATHS)
    monkeypatch.syspath_prepend(str(tmp_path))
    for old in ("engine.cli_support", "engine.webhooks", "plugins.delivery.mime"):
        _fresh(old)
    with pytest.warns(DeprecationWarning) as caught:
        plugin = importlib.import_module("acme_plugin")
    said = " ".join(str(warning.message) for warning in caught)
    for new in ("engine.cli.support", "engine.feedback.webhooks", "engine.mime"):
        assert f"import it from {new}" in said
    engine = sqlite_project.engine(plugins=[plugin])
    assert isinstance(engine.webhook_handlers.get("acme"), plugin.AcmeMailHandler)
