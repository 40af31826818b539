"""A smoke run of ``bench/learning.py``: a tiny population for three days, every key written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import learning  # noqa: E402
from learning_sim import click_probability, population  # noqa: E402


def test_the_population_clicks_at_email_rates() -> None:
    people = population(2000, seed=3)
    rates = [click_probability(p, v) for p in people for v in ("minimal", "visual", "urgent")]
    assert min(rates) >= 0.02 and max(rates) <= 0.10
    young_mobile = {"age_band": "young", "device": "mobile", "interest": "news"}
    assert click_probability(young_mobile, "visual") > click_probability(young_mobile, "digest")


def test_learning_benchmark_smoke_run(tmp_path: Path) -> None:
    out, png = tmp_path / "learning.json", tmp_path / "curve.png"
    argv = ["--recipients", "40", "--days", "3", "--jobs", "1", "--json", str(out)]
    figures = learning.main([*argv, "--png", str(png), "--policies", "uniform,abtest,vw"])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(figures))
    assert set(written["policies"]) == {"uniform", "abtest", "vw", "oracle"}
    for name, row in written["policies"].items():
        assert row["sends"] == 120, name  # everyone, every day, through the pipeline
        assert 0 < row["oracle_fraction_last"] <= 1.0 and row["regret"] >= 0, name
    assert written["policies"]["oracle"]["oracle_fraction_last"] == 1.0
    supervised = written["supervised"]
    for key in ("policy_accuracy", "reference_accuracy", "speed_ratio"):
        assert supervised[key] > 0, key
    assert "best_vw_regret_over_abtest" in written
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
