"""A tiny run of bench/campaign.py: every run it measures sends, the table and JSON appear.

No timing is asserted here; the figures belong to the benchmark's own output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "campaign.py"


def run_bench(script: Path, out: Path, *args: str) -> tuple[str, dict[str, Any]]:
    """Run a bench script writing ``--json out`` (it must succeed): its output, its figures."""
    done = subprocess.run(
        [sys.executable, str(script), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        env=os.environ | {"COLUMNS": "200"},  # the table's headers on one line each
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures: dict[str, Any] = json.loads(out.read_text())
    return done.stdout, figures


def bench(tmp_path: Path, *args: str) -> tuple[str, dict[str, Any]]:
    stdout, figures = run_bench(BENCH, tmp_path / "campaign.json", *args, "--floor", "30")
    for floor in ("floor", "floor_direct"):
        assert figures[floor]["emails_per_s"] > 0 and figures[floor]["emails_per_cpu_s"] > 0
    return stdout, figures


def test_campaign_bench_writes_every_key(tmp_path: Path) -> None:
    table, figures = bench(
        tmp_path, "--sqlite", "60", "--postgres", "", "--outbox", "30", "--workers", "0"
    )
    assert "ratio to floor" in table and "SQLite, null backend" in table
    run = figures["sqlite"]["60"]
    assert run["emails_per_s"] > 0 and run["emails_per_cpu_s"] > 0 and run["peak_rss_mb"] > 0
    # the product's own rendering, weighed with the variants the run sent
    render = run["floor_render"]
    assert sum(run["variants"].values()) == 60 and set(render["variants"]) == set(run["variants"])
    assert render["emails_per_s"] > 0 and "sqlite.60.of_floor_render " in table
    # where the time went: every stage timed, the shares of the run's wall time
    assert set(run["stages"]) >= {"audience", "decide", "claim", "render", "record", "other"}
    assert run["stages"]["render"] > 0 and 0.9 < sum(run["stages"].values()) < 1.1
    assert "sqlite.60.stages.render.share " in table
    assert figures["outbox"]["30"]["emails_per_s"] > 0
    assert "postgres" not in figures  # skipped by --postgres ""


def test_campaign_bench_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    # postgres_url skips the test without a server; the bench makes its own database.
    table, figures = bench(
        tmp_path, "--sqlite", "", "--postgres", "40", "--outbox", "0", "--workers", "80"
    )
    assert figures["postgres"]["40"]["emails_per_s"] > 0 and "sqlite" not in figures
    assert figures["postgres"]["40"]["floor_render"]["emails_per_s"] > 0
    for key in ("workers.1", "workers.2", "celery.2"):  # sharded runs: every one sent all
        group, n = key.split(".")
        assert figures[group][n]["emails_per_s"] > 0
    # two workers against one, and the ceiling two shared cores allow
    assert "workers.2.ceiling " in table and "workers.2.per_busy_core_of_one " in table
    assert figures["workers"]["1"]["w_ms"] > 0


def test_ledger_rate_bench(tmp_path: Path, postgres_url: str) -> None:
    stdout, figures = run_bench(
        BENCH.with_name("ledger_rate.py"),
        tmp_path / "ledger.json",
        *("--rows", "600", "--processes", "1,2"),
    )
    for processes in ("1", "2"):
        assert figures[processes]["rows_per_s"] > 0 and figures[processes]["w_ms"] > 0
        assert f"ledger.{processes}.rows_per_s " in stdout


def test_ledger_size_bench(tmp_path: Path, postgres_url: str) -> None:
    stdout, figures = run_bench(
        BENCH.with_name("ledger_size.py"), tmp_path / "size.json", "--recipients", "200"
    )
    assert figures["rows"] == 200
    parts = figures["table_bytes_per_row"] + figures["index_bytes_per_row"]
    assert figures["bytes_per_row"] == pytest.approx(parts) and parts > 0
    assert "ledger.bytes_per_row " in stdout
