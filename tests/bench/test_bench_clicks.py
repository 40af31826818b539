"""A tiny run of bench/clicks.py: both servers answer, every acknowledged click is stored.

No timing is asserted here; the figures belong to the benchmark's own output. That every
answered click is recorded (``recorded`` at least ``sent``, at most one more per connection:
requests wrk had not read when it stopped) is a correctness property of the intake.
The load comes from wrk (Debian's package): without it the test skips, and fails on CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "clicks.py"
KEYS = {
    "clicks_per_s",
    "bare_per_s",
    "ratio_to_bare",
    "p50_ms",
    "p99_ms",
    "sent",
    "recorded",
    "errors_5xx",
}


def test_clicks_bench_stores_every_acknowledged_click(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        if os.environ.get("CI"):
            pytest.fail("wrk is missing; CI requires it (.ci/run installs it)")
        pytest.skip("wrk is missing: apt-get install wrk")
    out = tmp_path / "clicks.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--seconds", "2", "--connections", "8"]
        + ["--recipients", "60", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    assert set(figures) >= KEYS
    assert figures["sent"] > 0 and figures["bare"]["redirects"] > 0
    assert figures["errors_5xx"] == 0
    assert figures["clicks"]["other"] == 0 and figures["clicks"]["broken"] == 0
    assert 0 <= figures["recorded"] - figures["sent"] == figures["in_flight"] <= 8
    assert "Traceback" not in done.stderr
    assert "tracking app" in done.stdout


def test_clicks_bench_refuses_a_bad_duration(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--seconds", "0"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "--seconds" in done.stderr and "Traceback" not in done.stderr
