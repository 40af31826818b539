"""A tiny run of bench/delivery.py: every backend it measures sends, the table and JSON appear.

No timing is asserted here; the figures belong to the benchmark's own output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "delivery.py"
KEYS = {
    "smtp.1",
    "smtp.4",
    "smtp.16",
    "outbox",
    "http.ses",
    "http.sendgrid",
    "http.postmark",
    "http.mailgun",
    "http.http_json",
}


def test_delivery_bench_runs_every_backend(tmp_path: Path) -> None:
    out = tmp_path / "delivery.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--messages", "12", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    assert set(figures) >= KEYS
    assert all(figures[key] > 0 for key in KEYS)
    assert figures["ratio_to_smtp.1"]["smtp.1"] == 1.0
    for key in KEYS:
        assert key in done.stdout
