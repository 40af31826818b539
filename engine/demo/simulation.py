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

What is inside the email counts too, without changing any of the above: a reader who
clicks opens the items they like. Each of the 48 catalogue items has a topic (its
``category``: news, style, deals, books, in turn) and a hidden ``appeal`` between 0.5 and
1.5 (``item_appeal``, a hash of its id). A reader's ``affinity`` for an item is its appeal,
tripled when the topic is their ``interest`` and a third of it otherwise (so a random item
averages 1). Having decided to click (the chance above), the reader clicks each item at
position ``n`` (0 first) with chance ``ITEM_CLICK x affinity x POSITION_DECAY ** n`` (at
most 1), and when that picks none, one item chosen in proportion to the same weights. So
about 1.2 items per clicking reader for a random list, about 2.2 for a list of their topic,
and the first positions draw more clicks (the position effect ``report --items`` shows).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import zlib
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
CATALOGUE_SIZE = 48
TOPIC_AFFINITY = (3.0, 1.0 / 3.0)  # the reader's interest, any other topic
POSITION_DECAY = 0.8
ITEM_CLICK = 0.25
FIRST_NAMES = ("Ada", "Grace", "Alan", "Barbara", "Donald", "Frances", "Ken", "Radia")
DOMAINS = ("example.com", "example.net", "example.org")
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0"
_BODY = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_MARKER = re.compile(r"\bdata-(layout|campaign)=\"([\w-]+)\"")
_HREF = re.compile(r"<a\b[^>]*\bhref=\"([^\"]+)\"", re.IGNORECASE)
_ANCHOR = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_ITEM = re.compile(r"\bdata-item=\"([\w-]+)\"")


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


def make_catalogue() -> list[tuple[str, str, str, str]]:
    """The demo's items: ``(id, title, category, url)``, the topics in turn."""
    topics = list(ATTRIBUTES["interest"])
    rows = []
    for i in range(1, CATALOGUE_SIZE + 1):
        topic = topics[i % len(topics)]
        url = f"https://shop.example.com/{topic}/i{i:03d}"
        rows.append((f"i{i:03d}", f"{topic.title()} pick #{i}", topic, url))
    return rows


_TOPICS = {item_id: topic for item_id, _title, topic, _url in make_catalogue()}


def item_appeal(item_id: str) -> float:
    """How much anyone likes ``item_id``, between 0.5 and 1.5 (hidden from the recipes)."""
    digest = hashlib.sha256(f"appeal:{item_id}".encode()).digest()
    return 0.5 + int.from_bytes(digest[:8], "big") / 2**64


def affinity(person: Mapping[str, Any], item_id: str) -> float:
    """How much ``person`` likes ``item_id``: its appeal, lifted by their interest."""
    mine, other = TOPIC_AFFINITY
    liked = _TOPICS.get(item_id) == person.get("interest")
    return item_appeal(item_id) * (mine if liked else other)


def _item_chances(person: Mapping[str, Any], item_ids: Sequence[str]) -> list[float]:
    """Per item shown (in order), the chance a clicking reader opens it by itself."""
    return [
        min(1.0, ITEM_CLICK * affinity(person, item) * POSITION_DECAY**n)
        for n, item in enumerate(item_ids)
    ]


def items_per_click(person: Mapping[str, Any], item_ids: Sequence[str]) -> float:
    """How many of ``item_ids`` a reader who clicks opens, on average (1 with no items)."""
    if not item_ids:
        return 1.0
    chances = _item_chances(person, item_ids)
    none = 1.0
    for chance in chances:
        none *= 1.0 - chance
    return sum(chances) + none  # when none is picked by itself, one is picked anyway


def expected_item_clicks(person: Mapping[str, Any], variant: str, item_ids: Sequence[str]) -> float:
    """The expected item clicks of ``person`` on an email of ``variant`` showing ``item_ids``."""
    return click_probability(person, variant) * items_per_click(person, item_ids)


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
    items_shown: int = 0  # distinct items the emails showed
    item_clicks: int = 0  # item links clicked (one request each)
    expected_item_clicks: float = 0.0  # their expectation under the module's preferences

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
    def item_ctr(self) -> float:
        """Item clicks per item shown."""
        return self.item_clicks / self.items_shown if self.items_shown else 0.0

    @property
    def expected_item_ctr(self) -> float:
        """Expected item clicks per item shown."""
        return self.expected_item_clicks / self.items_shown if self.items_shown else 0.0

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
        # Simulated people read from addresses of their own (the server limits each client
        # as one person): each clicks from one of READER_ADDRESSES loopback addresses.
        self.clients = [client] if client else [_loopback_client(a) for a in READER_ADDRESSES]
        self.client = self.clients[0]
        self.seen: set[str] = set()
        self._parser = BytesParser(policy=policy.default)
        self._pool = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="reader")
        self._requests: list[futures.Future[None]] = []
        self._later: list[tuple[str, str, str, int]] = []  # a reader's second and further items
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
        later, self._later = self._later, []
        self._requests += [self._pool.submit(self._request, *request) for request in later]
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
        links, items = _tracked_links(html)
        shown = list(dict.fromkeys(item for _, item in items))
        p = click_probability(person, markers["layout"])
        read = ReadCounts(1, 0, 0, p, best_probability(person), len(shown))
        read.expected_item_clicks = p * items_per_click(person, shown) if shown else 0.0
        coins = self._coins.setdefault(address, random.Random(f"{self.seed}:{address}"))
        unsubscribe, click, pick = coins.random(), coins.random(), coins.random()
        if unsubscribe < self.unsubscribe_rate:
            url = str(message["List-Unsubscribe"] or "").strip().removeprefix("<")
            requests = [("POST", url.removesuffix(">"), 200)]
            read.unsubscribes = 1
        elif click < p and items:
            chosen = clicked_item_links(person, items, coins)
            requests = [("GET", url, 302) for url in chosen]
            read.clicks, read.item_clicks = 1, len(chosen)
        elif click < p and links:
            requests = [("GET", links[int(pick * len(links))], 302)]
            read.clicks = 1
        else:
            return markers["campaign"], read
        for request in requests:
            if not request[1].startswith(("http://", "https://")):
                raise ValueError(f"{path.name}: not an http(s) URL: {request[1]!r}")
        first, *more = [(address, *request) for request in requests]
        self._requests.append(self._pool.submit(self._request, *first))
        self._later.extend(more)  # further items after every email's first click
        return markers["campaign"], read

    def _request(self, address: str, method: str, url: str, status: int) -> None:
        # RFC 8058: the one-click unsubscribe is a POST with this exact body.
        body = b"List-Unsubscribe=One-Click" if method == "POST" else None
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        client = self.clients[zlib.crc32(address.encode()) % len(self.clients)]
        try:
            response = client.request(
                method, url, content=body, headers=headers, follow_redirects=False
            )
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
            # A kept-alive connection the server closed as it was reused: as a browser
            # does, try once more on a new one (the server never read the request).
            response = client.request(
                method, url, content=body, headers=headers, follow_redirects=False
            )
        location = response.headers.get("location", "http://") if status == 302 else "http://"
        if response.status_code != status or not location.startswith(("http://", "https://")):
            raise RuntimeError(f"{method} {url} answered {response.status_code} {location!r}")

    def close(self) -> None:
        """Wait for the requests in flight, then close the HTTP clients."""
        self._pool.shutdown(wait=True)
        for client in self.clients:
            client.close()


READER_ADDRESSES = tuple(f"127.0.1.{n}" for n in range(1, 65))
"""Where the simulated people click from: loopback addresses (all of 127.0.0.0/8 is this
machine), so the tracking server's per-client limits see many readers, as in life."""


def _loopback_client(address: str) -> httpx.Client:
    """A browser-like client whose requests leave from ``address``."""
    # trust_env=False: a configured HTTP proxy must not see the loopback requests.
    return httpx.Client(
        headers={"User-Agent": BROWSER},
        timeout=30.0,
        trust_env=False,
        transport=httpx.HTTPTransport(local_address=address),
    )


def _tracked_links(html: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Every tracked link of an email, and the item links among them with their items."""
    links: list[str] = []
    items: list[tuple[str, str]] = []
    for tag in _ANCHOR.findall(html):
        href = _HREF.match(tag)
        if href is None or "/c/" not in href.group(1):
            continue
        url = unescape(href.group(1))
        links.append(url)
        item = _ITEM.search(tag)
        if item is not None:
            items.append((url, item.group(1)))
    return links, items


def clicked_item_links(
    person: Mapping[str, Any], items: Sequence[tuple[str, str]], coins: random.Random
) -> list[str]:
    """The item links a reader who clicks opens (at least one; an item linked twice at one
    position is one item, clicked through its first link)."""
    first_link = {item: url for url, item in reversed(items)}
    shown = list(dict.fromkeys(item for _, item in items))
    chances = _item_chances(person, shown)
    chosen = [
        first_link[item]
        for item, chance in zip(shown, chances, strict=True)
        if coins.random() < chance
    ]
    if chosen:
        return chosen
    threshold, total = coins.random() * sum(chances), 0.0
    for item, chance in zip(shown, chances, strict=True):
        total += chance
        if threshold < total:
            return [first_link[item]]
    return [first_link[shown[-1]]]


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
