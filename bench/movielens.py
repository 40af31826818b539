"""MovieLens 100k, read at run time from the copy inside the ``recbole`` wheel.

The data's licence forbids redistribution, so it is never committed: the wheel is fetched
with ``pip download --no-deps recbole`` into a cache directory outside the repository
(``$TAILORMAIL_BENCH_CACHE``, default ``~/.cache/tailormail-bench``) and read from the zip.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from engine.types import Interaction, Item, Recipient

_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.{}"


def cache_dir() -> Path:
    """Where the wheel is kept between runs."""
    default = Path.home() / ".cache" / "tailormail-bench"
    return Path(os.environ.get("TAILORMAIL_BENCH_CACHE", default))


def wheel(cache: Path | None = None) -> Path:
    """The recbole wheel in ``cache``, downloaded with pip when it is not there yet."""
    folder = cache or cache_dir()
    found = sorted(folder.glob("recbole-*.whl"))
    if found:
        return found[-1]
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "recbole"]
    subprocess.run([*command, "--dest", str(folder)], check=True)
    found = sorted(folder.glob("recbole-*.whl"))
    if not found:
        raise RuntimeError(f"pip download put no recbole wheel in {folder}")
    return found[-1]


def _table(archive: zipfile.ZipFile, suffix: str) -> list[list[str]]:
    with archive.open(_MEMBER.format(suffix)) as handle:
        lines = io.TextIOWrapper(handle, encoding="latin-1").read().splitlines()
    return [line.split("\t") for line in lines[1:] if line]


def _age_band(age: str) -> str:
    years = int(age)
    return (
        next(
            band
            for limit, band in (
                (18, "<18"),
                (25, "18-24"),
                (35, "25-34"),
                (45, "35-44"),
                (55, "45-54"),
            )
            if years < limit
        )
        if years < 55
        else "55+"
    )


def load(path: Path | None = None) -> tuple[list[Interaction], list[Item], list[Recipient]]:
    """Ratings as interactions (in file order), movies with genres and year, users with
    age band, gender and occupation."""
    with zipfile.ZipFile(path or wheel()) as archive:
        ratings = _table(archive, "inter")
        movies = _table(archive, "item")
        people = _table(archive, "user")
    interactions = [
        Interaction(user, item, datetime.fromtimestamp(float(stamp), UTC), 1.0, "rating")
        for user, item, _rating, stamp in ratings
    ]
    items = [
        Item(row[0], {"title": row[1], "year": row[2], "genres": row[3].split()}) for row in movies
    ]
    users = [
        Recipient(
            row[0],
            f"user{row[0]}@example.org",
            {"age": _age_band(row[1]), "gender": row[2], "occupation": row[3]},
        )
        for row in people
    ]
    return interactions, items, users
