"""A tiny run of bench/startup.py: every command it times runs, and every key appears.

No timing is asserted here; the figures belong to the benchmark's own output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "startup.py"


def test_startup_bench_prints_the_table_and_every_key(tmp_path: Path) -> None:
    out = tmp_path / "startup.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--runs", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        env=os.environ | {"COLUMNS": "200"},
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())["startup"]
    for command in ("version", "runs", "help", "check"):
        assert figures[command]["ratio"] > 0 and figures[command]["median_s"] > 0
        assert f"startup.{command}.ratio " in done.stdout
    assert "ratio to floor" in done.stdout
