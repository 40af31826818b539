"""A smoke run of ``bench/recipes.py``: tiny synthetic data, no download, every key written.

The MovieLens reader is exercised on a stand-in wheel (a zip with the three tables in the
layout of recbole's), so the parsing is tested without the network or the real data.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import movielens  # noqa: E402
import recipes  # noqa: E402

FIGURES = ("hr10", "ndcg10", "fit_s", "p99_ms")


def test_recipes_benchmark_runs_on_synthetic_data(tmp_path: Path) -> None:
    out = tmp_path / "recipes.json"
    figures = recipes.main(["--synthetic", "40", "--json", str(out)])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(figures))
    assert written["dataset"] == "synthetic, 40 users"
    assert set(written["recipes"]) == set(recipes.RECIPES)
    for label, row in written["recipes"].items():
        for key in FIGURES:
            assert isinstance(row[key], float) and row[key] >= 0, (label, key)
        assert 0 <= row["hr10"] <= 1 and 0 <= row["ndcg10"] <= row["hr10"]
    # On ordered data the co-occurrence recipes find the next item far more often.
    assert written["recipes"]["sims"]["hr10"] > written["recipes"]["popularity"]["hr10"]


def _fake_wheel(path: Path) -> Path:
    member = "recbole/dataset_example/ml-100k/ml-100k.{}"
    tables = {
        "inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t5\t881250949\n1\t20\t3\t881250950\n2\t10\t4\t891717742\n",
        "item": "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tToy Story\t1995\tAnimation Comedy\n20\tHeat\t1995\tAction\n",
        "user": "user_id:token\tage:token\tgender:token\toccupation:token\n"
        "1\t24\tM\ttechnician\n2\t53\tF\tother\n",
    }
    with zipfile.ZipFile(path, "w") as archive:
        for suffix, text in tables.items():
            archive.writestr(member.format(suffix), text.encode("latin-1"))
    return path


def test_movielens_reader_parses_the_wheels_tables(tmp_path: Path) -> None:
    interactions, items, users = movielens.load(_fake_wheel(tmp_path / "recbole-0-py3.whl"))
    assert [(i.user_id, i.item_id) for i in interactions] == [("1", "10"), ("1", "20"), ("2", "10")]
    assert interactions[0].timestamp.year == 1997 and interactions[0].kind == "rating"
    assert items[0].attributes == {
        "title": "Toy Story",
        "year": "1995",
        "genres": ["Animation", "Comedy"],
    }
    assert [u.attributes["age"] for u in users] == ["18-24", "45-54"]


def test_movielens_wheel_comes_from_the_cache_without_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = _fake_wheel(tmp_path / "recbole-1.2.1-py3-none-any.whl")

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip must not run when the wheel is cached")

    monkeypatch.setattr(movielens.subprocess, "run", no_download)
    monkeypatch.setenv("TAILORMAIL_BENCH_CACHE", str(tmp_path))
    assert movielens.wheel() == cached
