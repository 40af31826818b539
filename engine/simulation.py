"""A simulated population for the demo: who they are, what they click, and a mail reader.

Every recipient has an ``age_band`` (young 35%, middle 40%, senior 25%), a ``device``
(mobile 60%, desktop 40%) and an ``interest`` (news, style, deals, books, 25% each). The
chance that a recipient clicks an email of a variant is additive, so a linear model with
context x variant interactions (VW's ``-q UA``) can learn it::

    p(click) = BASE[variant] + AGE[age_band][variant] + DEVICE[device][variant]
               + INTEREST[interest][variant]            (at least 1%)

    percent          minimal  visual  urgent  digest
    BASE               4.5     3.0     3.0     2.5
    AGE young          0       7.0     3.0    -1.0
    AGE middle         3.0     1.0     7.0     0
    AGE senior         3.0    -1.5    -1.5     7.0
    DEVICE mobile      0       5.0     4.0    -1.0
    DEVICE desktop     5.0    -1.0    -1.0     6.0
    INTEREST news      2.0     0       0       0
    INTEREST style     0       2.0     0       0
    INTEREST deals     0       0       3.0     0
    INTEREST books     0       0       0       2.0

Which gives, before the interest bonus, one best variant per segment:

    segment           minimal  visual  urgent  digest  best
    young, mobile       4.5    15.0    10.0     1.0    visual
    young, desktop      9.5     9.0     5.0     7.5    minimal
    middle, mobile      7.5     9.0    14.0     1.5    urgent
    middle, desktop    12.5     3.0     9.0     8.5    minimal
    senior, mobile      7.5     6.5     5.5     8.5    digest
    senior, desktop    12.5     1.0     1.0    15.5    digest

Over the population a uniform A/B split earns about 8.3% and the oracle (the best variant
for every recipient) about 13.3%.

The ``Reader`` plays the recipients: it reads the delivered ``.eml`` files, recognises the
recipient by the To address and the variant by the layout marker the demo templates put
on ``<body>``, and clicks a tracked link over real HTTP when its seeded coin says so.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

VARIANTS = ("minimal", "visual", "urgent", "digest")
AGE_BANDS = {"young": 0.35, "middle": 0.40, "senior": 0.25}
DEVICES = {"mobile": 0.6, "desktop": 0.4}
INTERESTS = {"news": 0.25, "style": 0.25, "deals": 0.25, "books": 0.25}
FIRST_NAMES = ("Ada", "Grace", "Alan", "Barbara", "Donald", "Frances", "Ken", "Radia")
DOMAINS = ("example.com", "example.net", "example.org")
MIN_PROBABILITY = 0.01

BASE = {"minimal": 0.03, "visual": 0.03, "urgent": 0.03, "digest": 0.03}
LIFTS: dict[str, dict[str, dict[str, float]]] = {
    "age_band": {
        "young": {"visual": 0.09, "urgent": 0.03},
        "middle": {"minimal": 0.03, "urgent": 0.08},
        "senior": {"minimal": 0.04, "digest": 0.09},
    },
    "device": {
        "mobile": {"visual": 0.03, "urgent": 0.02},
        "desktop": {"minimal": 0.06, "digest": 0.02},
    },
    "interest": {
        "news": {"minimal": 0.02},
        "style": {"visual": 0.02},
        "deals": {"urgent": 0.03},
        "books": {"digest": 0.02},
    },
}
BROWSER_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
_LAYOUT = re.compile(r"<body\b[^>]*\bdata-layout=\"([\w-]+)\"", re.IGNORECASE)
_CAMPAIGN = re.compile(r"<body\b[^>]*\bdata-campaign=\"([\w-]+)\"", re.IGNORECASE)
_HREF = re.compile(r"<a\b[^>]*\bhref=\"([^\"]+)\"", re.IGNORECASE)


def _pick(rng: random.Random, weights: Mapping[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def make_population(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` recipients (id, email, first_name, age_band, device, interest, arm).

    Attributes are drawn independently of the position, and ``arm`` alternates between
    ``vw`` and ``uniform``, so both arms get half the people from the same distribution.
    """
    rng = random.Random(seed)
    people = []
    for i in range(1, n + 1):
        name = rng.choice(FIRST_NAMES)
        people.append(
            {
                "id": f"r{i:05d}",
                "email": f"{name.lower()}.{i}@{rng.choice(DOMAINS)}",
                "first_name": name,
                "age_band": _pick(rng, AGE_BANDS),
                "device": _pick(rng, DEVICES),
                "interest": _pick(rng, INTERESTS),
                "arm": "vw" if i % 2 else "uniform",
            }
        )
    return people


def click_probability(person: Mapping[str, Any], variant: str) -> float:
    """The chance that ``person`` clicks an email of ``variant`` (see the module table)."""
    if variant not in BASE:
        raise ValueError(f"unknown demo variant {variant!r}")
    p = BASE[variant]
    for attribute, table in LIFTS.items():
        p += table.get(str(person.get(attribute)), {}).get(variant, 0.0)
    return max(MIN_PROBABILITY, p)


def best_probability(person: Mapping[str, Any], variants: Sequence[str] = VARIANTS) -> float:
    """The click probability of the best variant for ``person``: what an oracle earns."""
    return max(click_probability(person, v) for v in variants)


def oracle_ctr(people: Iterable[Mapping[str, Any]], variants: Sequence[str] = VARIANTS) -> float:
    """The expected CTR when every person gets their best variant."""
    values = [best_probability(p, variants) for p in people]
    return sum(values) / len(values) if values else 0.0


def uniform_ctr(people: Iterable[Mapping[str, Any]], variants: Sequence[str] = VARIANTS) -> float:
    """The expected CTR when every person gets a variant drawn uniformly at random."""
    values = [sum(click_probability(p, v) for v in variants) / len(variants) for p in people]
    return sum(values) / len(values) if values else 0.0


@dataclass
class ReadCounts:
    """What the Reader did with one campaign's emails."""

    emails: int = 0
    clicks: int = 0
    unsubscribes: int = 0
    expected_clicks: float = 0.0  # sum of the delivered variants' click probabilities
    oracle_clicks: float = 0.0  # sum of the best variants' click probabilities
    variants: dict[str, int] = field(default_factory=dict)

    @property
    def realized_ctr(self) -> float:
        """Clicks per email read."""
        return self.clicks / self.emails if self.emails else 0.0

    @property
    def expected_ctr(self) -> float:
        """Mean click probability of the variants delivered: the CTR without the noise."""
        return self.expected_clicks / self.emails if self.emails else 0.0

    @property
    def oracle_ctr(self) -> float:
        """Mean click probability had each of these recipients got their best variant."""
        return self.oracle_clicks / self.emails if self.emails else 0.0

    def add(self, other: ReadCounts) -> None:
        """Add ``other``'s counts to these."""
        self.emails += other.emails
        self.clicks += other.clicks
        self.unsubscribes += other.unsubscribes
        self.expected_clicks += other.expected_clicks
        self.oracle_clicks += other.oracle_clicks
        for key, n in other.variants.items():
            self.variants[key] = self.variants.get(key, 0) + n


class Reader:
    """Reads each delivered ``.eml`` once and clicks (or unsubscribes) like its recipient.

    The coin for an email is seeded by ``seed`` and the email's Message-ID, so a run is
    reproducible whatever order the files are read in.
    """

    def __init__(
        self,
        outbox: Path,
        people: Iterable[Mapping[str, Any]],
        *,
        seed: int = 0,
        unsubscribe_rate: float = 0.003,
        client: httpx.Client | None = None,
    ) -> None:
        """Read ``outbox``; ``client`` defaults to a loopback-safe httpx client."""
        self.outbox = Path(outbox)
        self.people = {str(p["email"]).lower(): dict(p) for p in people}
        self.seed = seed
        self.unsubscribe_rate = unsubscribe_rate
        self.client = client or httpx.Client(
            follow_redirects=False,
            trust_env=False,  # a configured proxy must not see loopback requests
            timeout=10.0,
            headers={"User-Agent": BROWSER_USER_AGENT},
        )
        self.seen: set[str] = set()
        self.totals: dict[str, ReadCounts] = {}
        self._parser = BytesParser(policy=policy.default)

    def poll(self) -> dict[str, ReadCounts]:
        """Read every new email in the outbox; the counts of this poll, per campaign."""
        counts: dict[str, ReadCounts] = {}
        if not self.outbox.is_dir():
            return counts
        for path in sorted(self.outbox.glob("*.eml")):
            if path.name in self.seen:
                continue
            self.seen.add(path.name)
            campaign, read = self._read(path)
            counts.setdefault(campaign, ReadCounts()).add(read)
        for campaign, read in counts.items():
            self.totals.setdefault(campaign, ReadCounts()).add(read)
        return counts

    def _read(self, path: Path) -> tuple[str, ReadCounts]:
        with path.open("rb") as handle:
            message = self._parser.parse(handle)
        assert isinstance(message, EmailMessage)
        address = parseaddr(str(message["To"]))[1].lower()
        person = self.people.get(address)
        body = message.get_body(preferencelist=("html",))
        html = body.get_content() if isinstance(body, EmailMessage) else ""
        layout, campaign = _LAYOUT.search(html), _CAMPAIGN.search(html)
        if person is None or layout is None or campaign is None:
            raise ValueError(f"{path.name}: not a demo email to a simulated recipient")
        variant = layout.group(1)
        p = click_probability(person, variant)
        read = ReadCounts(1, 0, 0, p, best_probability(person), {variant: 1})
        rng = random.Random(f"{self.seed}\x00{message['Message-ID']}")
        if rng.random() < self.unsubscribe_rate:
            self._unsubscribe(path, str(message["List-Unsubscribe"] or ""))
            read.unsubscribes = 1
        elif rng.random() < p:
            links = [url for url in _HREF.findall(html) if "/c/" in url]
            if not links:
                raise ValueError(f"{path.name}: no tracked link to click")
            self._click(rng.choice(links).replace("&amp;", "&"))
            read.clicks = 1
        return campaign.group(1), read

    def _click(self, url: str) -> None:
        response = self.client.get(url)
        location = response.headers.get("location", "")
        if response.status_code != 302 or not location.startswith(("http://", "https://")):
            raise RuntimeError(f"click on {url} answered {response.status_code} {location!r}")

    def _unsubscribe(self, name: str | Path, header: str) -> None:
        url = header.strip().removeprefix("<").removesuffix(">")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{name}: no one-click List-Unsubscribe URL")
        response = self.client.post(
            url,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        if response.status_code != 200:
            raise RuntimeError(f"unsubscribe via {url} answered {response.status_code}")

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_reader(
    conn: Connection,
    outbox: str,
    people: list[dict[str, Any]],
    seed: int,
    unsubscribe_rate: float = 0.003,
) -> None:
    """Run a ``Reader`` in a child process (parsing mail is slow: it gets its own core).

    It polls the outbox until it receives ``"stop"``; on ``"drain"`` it polls once more and
    answers ``("counts", {campaign: ReadCounts})`` for everything read since the last drain,
    or ``("error", message)`` once reading has failed.
    """
    pending: dict[str, ReadCounts] = {}
    error: str | None = None
    with Reader(Path(outbox), people, seed=seed, unsubscribe_rate=unsubscribe_rate) as reader:
        while True:
            command = conn.recv() if conn.poll(0.05) else None
            if command == "stop":
                return
            try:
                if error is None:
                    for campaign, read in reader.poll().items():
                        pending.setdefault(campaign, ReadCounts()).add(read)
            except Exception as exc:  # reported to the parent at the next drain
                error = f"{type(exc).__name__}: {exc}"
            if command == "drain":
                conn.send(("error", error) if error else ("counts", pending))
                pending = {}
