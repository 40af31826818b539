"""``tailormail init``: a working project with a sample campaign, templates and data."""

from __future__ import annotations

import csv
import random
import shutil
import sysconfig
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from engine.errors import TailormailError


def _sample_root() -> Path:
    """The source tree's ``config/`` and ``templates/`` (a checkout or editable install),
    else the copy a wheel installs under ``<prefix>/share/tailormail``."""
    source = Path(__file__).resolve().parent.parent
    if (source / "config" / "tailormail.toml").is_file():
        return source
    return Path(sysconfig.get_path("data")) / "share" / "tailormail"


SOURCE_ROOT = _sample_root()
"""Where the sample project lives: ``config/`` and ``templates/`` as in the repository."""

FIRST_NAMES = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Margaret",
    "Dennis",
    "Radia",
    "Linus",
    "Katherine",
    "Guido",
    "Sophie",
]
COUNTRIES = ["FR", "DE", "GB", "US", "ES"]
CATEGORIES = ["books", "music", "games", "garden", "kitchen"]


GITIGNORE = "".join(
    f"{line}\n"
    for line in (
        "# What tailormail writes that holds people's data or secrets: never commit it.",
        "outbox/",  # every email sent through the outbox backend, test copies included
        "preview/",  # previews: a real recipient's address and email
        "exports/",  # where to put `tailormail export -o` files (recipient ids, contexts)
        "spool/",  # the tracking server's event logs and rejected records
        "journal/",  # hand-over journals: an outcome line may quote an SMTP answer
        "rehearsals/",  # dry runs' records (keyed hashes of recipient ids, their variants)
        "*.db",
        "*.db-wal",
        "*.db-shm",
        "*.db-journal",
        ".tailormail-secret",
    )
)
"""The generated project's ``.gitignore``."""


def write_csv(path: Path, header: list[str], rows: Iterable[Sequence[object]]) -> Path:
    """Write ``header`` then ``rows`` as CSV; returns ``path``."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _people(rng: random.Random, n: int = 40) -> Iterator[list[str]]:
    for i in range(1, n + 1):
        name = rng.choice(FIRST_NAMES)
        email = f"{name.lower()}.{i}@example.com"
        yield [f"u{i:03d}", email, name, rng.choice(COUNTRIES), rng.choice(["free", "premium"])]


def _items(rng: random.Random, n: int = 20) -> Iterator[list[str]]:
    for i in range(1, n + 1):
        category = rng.choice(CATEGORIES)
        url = f"https://shop.example.com/items/i{i:03d}"
        price = f"{rng.randint(5, 80)}.00 EUR"
        yield [f"i{i:03d}", f"{category.title()} pick #{i}", category, price, url]


def _interactions(rng: random.Random, n: int = 400) -> Iterator[list[str]]:
    start = datetime.now(UTC) - timedelta(days=20)
    for _ in range(n):
        item = min(int(rng.paretovariate(1.2)), 20)  # a few items are much more popular
        when = start + timedelta(minutes=rng.randint(0, 20 * 24 * 60))
        yield [f"u{rng.randint(1, 40):03d}", f"i{item:03d}", when.isoformat()]


def scaffold_project(directory: Path, *, force: bool = False, seed: int = 1) -> list[Path]:
    """Create a project in ``directory``; refuses a non-empty one unless ``force``."""
    if directory.exists() and any(directory.iterdir()) and not force:
        raise TailormailError(f"{directory} is not empty (use --force to write into it)")
    if not (SOURCE_ROOT / "config" / "tailormail.toml").is_file():
        raise TailormailError(f"sample project not found under {SOURCE_ROOT}")
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    copies = [
        SOURCE_ROOT / "config" / "tailormail.toml",
        *sorted((SOURCE_ROOT / "config" / "campaigns").glob("*.toml")),
        *sorted(p for p in (SOURCE_ROOT / "templates" / "weekly").rglob("*") if p.is_file()),
    ]
    for source in copies:
        target = directory / source.relative_to(SOURCE_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        written.append(target)
    rng = random.Random(seed)
    samples = {
        "people.csv": (["id", "email", "first_name", "country", "plan"], _people(rng)),
        "items.csv": (["id", "title", "category", "price", "url"], _items(rng)),
        "interactions.csv": (["user_id", "item_id", "timestamp"], _interactions(rng)),
    }
    for name, (header, rows) in samples.items():
        written.append(write_csv(directory / name, header, rows))
    gitignore = directory / ".gitignore"
    gitignore.write_text(GITIGNORE)
    written.append(gitignore)
    return written
