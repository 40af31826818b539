"""A tiny run of bench/api.py: both servers answer, every trigger the API committed is sent
once, and replaying every request with its key adds nothing.

No timing is asserted here; the figures belong to the benchmark's own output. The load
comes from wrk (Debian's package): without it the test skips, and fails on CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "api.py"
KEYS = {
    "trigger.per_s",
    "trigger.bare_per_s",
    "trigger.ratio_to_bare",
    "trigger.accepted",
    "trigger.sent",
    "trigger.handoff_p99_ms",
    "trigger.duplicates",
}


def test_api_bench_sends_every_accepted_trigger_once(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        if os.environ.get("CI"):
            pytest.fail("wrk is missing; CI requires it (.ci/run installs it)")
        pytest.skip("wrk is missing: apt-get install wrk")
    out = tmp_path / "api.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--seconds", "2", "--connections", "8"]
        + ["--people", "40", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    assert set(figures) >= KEYS
    assert figures["trigger.accepted"] > 0 and figures["bare"]["accepted"] > 0
    assert figures["trigger.sent"] == figures["trigger.accepted"]
    assert figures["trigger.duplicates"] == 0
    assert figures["trigger.replays_not_replayed"] == 0
    assert figures["trigger.errors_5xx"] == 0
