"""docs/api.md's examples, run against a real API server: its curl commands with curl, its
Python with the package's client. An example that stops working fails here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from kit.project import ROOT, Project
from kit.triggers import add_triggered_campaign, serve_api

from engine.web.api_openapi import openapi_document, render

DOC = ROOT / "docs" / "api.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(DOC.read_text()) if lang == language]


def test_the_docs_examples_run_against_a_live_api(sqlite_project: Project, tmp_path: Path) -> None:
    add_triggered_campaign(sqlite_project)
    engine = sqlite_project.engine()
    sqlite_project.seed(engine, people=8)
    curls = [b for b in _blocks("bash") if "curl" in b]
    scripts = _blocks("python")
    assert len(curls) == 2 and len(scripts) == 2
    with serve_api(engine) as api:
        env = os.environ | {"TAILORMAIL_API": api.server.url, "TAILORMAIL_KEY": api.key}
        triggered = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", curls[0]], env=env, capture_output=True, text=True
        )
        assert triggered.returncode == 0, triggered.stderr
        answer = json.loads(triggered.stdout)
        assert answer["status"] == "queued" and answer["recipient_id"] == "u001"
        env["TRIGGER_ID"] = answer["trigger_id"]
        read = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", curls[1]], env=env, capture_output=True, text=True
        )
        assert json.loads(read.stdout)["trigger_id"] == answer["trigger_id"]
        for number, script in enumerate(scripts):
            path = tmp_path / f"example{number}.py"
            path.write_text(script)
            ran = subprocess.run(
                [sys.executable, str(path)],
                env=env | {"PYTHONPATH": str(ROOT)},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert ran.returncode == 0, ran.stderr
            if number == 0:  # the first prints its decision
                status, variant, probability = ran.stdout.split()
                assert status == "queued" and variant in ("short", "long")
                assert 0 < float(probability) <= 1


def test_the_checked_in_openapi_document_is_the_served_one(sqlite_project: Project) -> None:
    assert (ROOT / "docs" / "openapi.json").read_text() == render(), (
        "run `python -m engine.web.api_openapi` to write docs/openapi.json again"
    )
    with serve_api(sqlite_project.engine(), release=False) as api:
        served = api.client.get("/v1/openapi.json")
    assert served.status_code == 200 and served.json() == openapi_document()
    assert served.json()["openapi"] == "3.1.0"


@pytest.mark.parametrize("path", ["/v1/campaigns/pricedrop/trigger", "/v1/triggers/x"])
def test_documented_paths_are_in_the_document(path: str) -> None:
    paths = openapi_document()["paths"]
    assert path.replace("pricedrop", "{name}").replace("/x", "/{id}") in paths
