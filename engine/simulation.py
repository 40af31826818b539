"""The demo's simulated population: who they are, what they click, and how they read mail.

Recipients have an ``age_band`` (young 35%, middle 40%, senior 25%), a ``device`` (mobile
60%, desktop 40%) and an ``interest`` (news, style, deals, books). The chance of a click is
3% plus the lifts (``LIFTS``) of the recipient's attributes for the variant, so a linear
model of context x variant (VW's ``--interactions UA``) can learn it. The interests add 2
points to minimal, visual, urgent and digest respectively; age and device make segments
with their own best variant (click probability in %, before the interest lift):

    segment            minimal  visual  urgent  digest   best
    young, mobile          3      17       7       3     visual
    young, desktop         9      13       3       6     visual
    middle, mobile         7       7      16       3     urgent
    middle, desktop       13       3      12       6     minimal
    senior, mobile         3       7       7      13     digest
    senior, desktop        9       3       3      16     digest

A uniform A/B split earns about 8.4%, the oracle (everyone gets their best) about 15.4%.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr
from html import unescape
from pathlib import Path
from typing import Any

import httpx

VARIANTS = ("minimal", "visual", "urgent", "digest")
ARMS = ("vw", "uniform", "abtest")  # the demo's policies, one campaign each
ATTRIBUTES = {
    "age_band": {"young": 0.35, "middle": 0.40, "senior": 0.25},
    "device": {"mobile": 0.6, "desktop": 0.4},
    "interest": {"news": 0.25, "style": 0.25, "deals": 0.25, "books": 0.25},
}
BASE = 0.03
LIFTS: dict[str, dict[str, float]] = {  # "attribute=value" -> variant -> lift
    "age_band=young": {"visual": 0.10},
    "age_band=middle": {"minimal": 0.04, "urgent": 0.09},
    "age_band=senior": {"digest": 0.10},
    "device=mobile": {"visual": 0.04, "urgent": 0.04},
    "device=desktop": {"minimal": 0.06, "digest": 0.03},
} | {f"interest={i}": {v: 0.02} for i, v in zip(ATTRIBUTES["interest"], VARIANTS, strict=True)}
FIRST_NAMES = ("Ada", "Grace", "Alan", "Barbara", "Donald", "Frances", "Ken", "Radia")
DOMAINS = ("example.com", "example.net", "example.org")
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0"
_BODY = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_MARKER = re.compile(r"\bdata-(layout|campaign)=\"([\w-]+)\"")
_HREF = re.compile(r"<a\b[^>]*\bhref=\"([^\"]+)\"", re.IGNORECASE)


def make_population(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` recipients: id, email, first_name, age_band, device, interest and ``arm``.

    ``arm`` cycles through ``vw``, ``uniform`` and ``abtest`` while the attributes are
    drawn independently, so each arm gets a third of the people from the same distribution.
    """
    rng = random.Random(seed)
    people = []
    for i in range(1, n + 1):
        name = rng.choice(FIRST_NAMES)
        person = {"id": f"r{i:05d}", "email": f"{name.lower()}.{i}@{rng.choice(DOMAINS)}"}
        person["first_name"] = name
        for attribute, shares in ATTRIBUTES.items():
            person[attribute] = rng.choices(list(shares), weights=list(shares.values()))[0]
        people.append(person | {"arm": ARMS[(i - 1) % len(ARMS)]})
    return people


def click_probability(person: Mapping[str, Any], variant: str) -> float:
    """The chance that ``person`` clicks an email of ``variant`` (the module's table)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown demo variant {variant!r}")
    lifts = (LIFTS.get(f"{a}={person.get(a)}", {}).get(variant, 0.0) for a in ATTRIBUTES)
    return max(0.01, BASE + sum(lifts))


def best_probability(person: Mapping[str, Any]) -> float:
    """The click probability of ``person``'s best variant: what an oracle would earn."""
    return max(click_probability(person, variant) for variant in VARIANTS)


def oracle_ctr(people: Sequence[Mapping[str, Any]]) -> float:
    """The expected CTR when everyone gets their best variant."""
    return sum(map(best_probability, people)) / len(people) if people else 0.0


def uniform_ctr(people: Sequence[Mapping[str, Any]], variants: Sequence[str]) -> float:
    """The expected CTR when everyone gets one of ``variants`` uniformly at random."""
    total = sum(click_probability(p, v) / len(variants) for p in people for v in variants)
    return total / len(people) if people else 0.0


@dataclass
class ReadCounts:
    """What the recipients of one campaign did with the emails they read."""

    emails: int = 0
    clicks: int = 0
    unsubscribes: int = 0
    expected_clicks: float = 0.0  # sum of the click probabilities of the variants delivered
    oracle_clicks: float = 0.0  # the same had each recipient got their best variant

    def add(self, other: ReadCounts) -> None:
        """Add ``other``'s counts to these."""
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)

    @property
    def realized_ctr(self) -> float:
        """Clicks per email."""
        return self.clicks / self.emails if self.emails else 0.0

    @property
    def expected_ctr(self) -> float:
        """Mean click probability of the variants delivered: the CTR without the coin noise."""
        return self.expected_clicks / self.emails if self.emails else 0.0

    @property
    def oracle_ctr(self) -> float:
        """Mean click probability had these recipients got their best variants."""
        return self.oracle_clicks / self.emails if self.emails else 0.0


class Reader:
    """Reads every delivered ``.eml`` once, and clicks or unsubscribes like its recipient.

    Who: the To address; which variant: the marker on the email's ``<body>``. Everyone's
    coins come from their own seeded stream, so the order of reading changes nothing.
    Requests go out on a few threads sharing one HTTP client, never holding up reading.
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
        """Read ``outbox`` for ``people``; ``client`` defaults to a browser-like one."""
        self.outbox = Path(outbox)
        self.people = {str(p["email"]).lower(): p for p in people}
        self.seed, self.unsubscribe_rate = seed, unsubscribe_rate
        # trust_env=False: a configured HTTP proxy must not see the loopback requests.
        headers = {"User-Agent": BROWSER}
        self.client = client or httpx.Client(headers=headers, timeout=30.0, trust_env=False)
        self.seen: set[str] = set()
        self._parser = BytesParser(policy=policy.default)
        self._pool = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="reader")
        self._requests: list[futures.Future[None]] = []
        self._coins: dict[str, random.Random] = {}

    def poll(self, *, wait: bool = False) -> dict[str, ReadCounts]:
        """Read the new emails; counts per campaign. ``wait``: until every request so far is
        answered. A failed request raises here."""
        counts: dict[str, ReadCounts] = {}
        names = set(os.listdir(self.outbox)) if self.outbox.is_dir() else set()
        for name in sorted(n for n in names - self.seen if n.endswith(".eml")):
            self.seen.add(name)
            campaign, read = self._read(self.outbox / name)
            counts.setdefault(campaign, ReadCounts()).add(read)
        if wait:
            futures.wait(self._requests)
        for request in [f for f in self._requests if f.done()]:
            self._requests.remove(request)
            request.result()
        return counts

    def _read(self, path: Path) -> tuple[str, ReadCounts]:
        with path.open("rb") as handle:
            message = self._parser.parse(handle)
        assert isinstance(message, EmailMessage)
        address = parseaddr(str(message["To"]))[1].lower()
        parts = [p for p in message.iter_parts() if p.get_content_type() == "text/html"]
        html = str(parts[0].get_content()) if parts else ""
        body = _BODY.search(html)
        markers = dict(_MARKER.findall(body.group(0))) if body else {}
        person = self.people.get(address)
        if person is None or markers.keys() != {"layout", "campaign"}:
            raise ValueError(f"{path.name}: not a demo email to a simulated recipient")
        p = click_probability(person, markers["layout"])
        read = ReadCounts(1, 0, 0, p, best_probability(person))
        coins = self._coins.setdefault(address, random.Random(f"{self.seed}:{address}"))
        unsubscribe, click, pick = coins.random(), coins.random(), coins.random()
        links = [unescape(url) for url in _HREF.findall(html) if "/c/" in url]
        if unsubscribe < self.unsubscribe_rate:
            url = str(message["List-Unsubscribe"] or "").strip().removeprefix("<")
            request = ("POST", url.removesuffix(">"), 200)
            read.unsubscribes = 1
        elif click < p and links:
            request = ("GET", links[int(pick * len(links))], 302)
            read.clicks = 1
        else:
            return markers["campaign"], read
        if not request[1].startswith(("http://", "https://")):
            raise ValueError(f"{path.name}: not an http(s) URL: {request[1]!r}")
        self._requests.append(self._pool.submit(self._request, *request))
        return markers["campaign"], read

    def _request(self, method: str, url: str, status: int) -> None:
        # RFC 8058: the one-click unsubscribe is a POST with this exact body.
        body = b"List-Unsubscribe=One-Click" if method == "POST" else None
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        response = self.client.request(
            method, url, content=body, headers=headers, follow_redirects=False
        )
        location = response.headers.get("location", "http://") if status == 302 else "http://"
        if response.status_code != status or not location.startswith(("http://", "https://")):
            raise RuntimeError(f"{method} {url} answered {response.status_code} {location!r}")

    def close(self) -> None:
        """Wait for the requests in flight, then close the HTTP client."""
        self._pool.shutdown(wait=True)
        self.client.close()


_process: list[Any] = []  # in a reader process: its Reader and the demo's "finished" event


def start_reader(outbox: str, people: list[dict[str, Any]], seed: int, finished: Any) -> None:
    """Initializer of a one-process pool: parsing mail is slow, so reading gets its own core.
    ``finished`` is a ``multiprocessing.Event``, set once a round's campaign runs are done."""
    _process[:] = [Reader(Path(outbox), people, seed=seed), finished]


def read_round() -> dict[str, ReadCounts]:
    """In the reader process: read while the campaigns send; once ``finished`` is set, read
    what is left, wait for every request, and return the round's counts per campaign."""
    reader, finished = _process
    counts: dict[str, ReadCounts] = {}
    new: dict[str, ReadCounts] = {}
    while True:
        last = bool(finished.wait(0.0 if new else 0.2))  # listing a folder is not free
        new = reader.poll(wait=last)
        for campaign, read in new.items():
            counts.setdefault(campaign, ReadCounts()).add(read)
        if last:
            return counts
