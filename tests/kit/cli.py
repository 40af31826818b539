"""The ``tailormail`` command as tests run it: ``tailormail`` in a subprocess, as a user
runs it (fails the test on a traceback), ``fails`` for its error answers, ``imported`` for a
project with the sample files imported, and ``cli`` for a run in process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli.commands import main


def tailormail(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``tailormail ARGS`` in ``cwd`` with no TAILORMAIL_* variables of the caller's
    (``env`` adds some); fails the test if it printed a traceback."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TAILORMAIL_")}
    done = subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=cwd,
        env=clean | {"COLUMNS": "200"} | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done


def fails(done: subprocess.CompletedProcess[str], *phrases: str) -> str:
    """Assert exit status 2 with one ``error:`` line naming every phrase; return it."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    message = " ".join(done.stderr.split())  # rich wraps long lines
    assert message.startswith("error: "), done.stderr
    for phrase in phrases:
        assert phrase in message, (phrase, message)
    return message


def imported(project: Path, *kinds: str) -> Path:
    """``project`` with the sample files of ``kinds`` imported."""
    files = {"recipients": "people.csv", "items": "items.csv", "interactions": "interactions.csv"}
    for kind in kinds:
        done = tailormail("import", kind, files[kind], cwd=project)
        assert done.returncode == 0, done.stderr
    return project


def cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """``tailormail ARGS`` in process, in the current directory; its exit status."""
    monkeypatch.setattr(sys, "argv", ["tailormail", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
