"""Opaque signed tokens for tracked links, opens and unsubscribes; reward hygiene.

A token carries ids only (kind, send id, link index), never a URL: the click redirect
target is looked up in the database, so a forged or edited token cannot become an open
redirect. The MAC is checked in constant time before anything in the payload is trusted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass

_KINDS = {"click": 1, "open": 2, "unsubscribe": 3}
_MAC_LEN = 16  # 128-bit truncated HMAC-SHA256: forging needs ~2**128 guesses
_DOMAIN = b"tailormail-token-v1\x00"  # so these MACs never collide with other uses of the key
_HEAD = struct.Struct(">BQ")  # kind, send id
_LINK = struct.Struct(">H")  # link index, click tokens only
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_SEND_ID = 2**64 - 1
_MAX_LINK_INDEX = 2**16 - 1


@dataclass(frozen=True)
class TokenData:
    """What a verified token says: its kind, the send (ledger row) and the link index."""

    kind: str
    send_id: int
    link_index: int | None = None


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Tokens:
    """Makes and verifies the signed tokens in tracked URLs (``/c/``, ``/o/``, ``/u/``)."""

    def __init__(self, secret: bytes) -> None:
        """``secret`` is the signing key; every web worker must share it."""
        if not secret:
            raise ValueError("the tracking secret must not be empty")
        self._secret = secret

    def click(self, send_id: int, link_index: int) -> str:
        """A token for the ``link_index``-th link of the message of ``send_id``."""
        if not 0 <= link_index <= _MAX_LINK_INDEX:
            raise ValueError(f"link index {link_index} is outside 0..{_MAX_LINK_INDEX}")
        return self._make("click", send_id, _LINK.pack(link_index))

    def open(self, send_id: int) -> str:
        """A token for the open pixel of the message of ``send_id``."""
        return self._make("open", send_id, b"")

    def unsubscribe(self, send_id: int) -> str:
        """A token for the one-click unsubscribe link of the message of ``send_id``."""
        return self._make("unsubscribe", send_id, b"")

    def verify(self, token: str, kind: str) -> TokenData | None:
        """The token's data if it is authentic and of ``kind``, else None; never raises.

        ``kind`` is "click", "open" or "unsubscribe"; any other name is a programming
        error and raises ``ValueError``.
        """
        if kind not in _KINDS:
            raise ValueError(f"unknown token kind {kind!r}; use one of {sorted(_KINDS)}")
        if not isinstance(token, str) or not _TOKEN_CHARS.fullmatch(token):
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        # Only the canonical spelling is accepted: base64's spare low bits would otherwise
        # let several strings decode to one token.
        if len(raw) != self._length(kind) or not hmac.compare_digest(_b64encode(raw), token):
            return None
        payload, mac = raw[:-_MAC_LEN], raw[-_MAC_LEN:]
        if not hmac.compare_digest(self._mac(payload), mac):
            return None
        kind_byte, send_id = _HEAD.unpack_from(payload)
        if kind_byte != _KINDS[kind]:
            return None
        link_index = _LINK.unpack_from(payload, _HEAD.size)[0] if kind == "click" else None
        return TokenData(kind=kind, send_id=send_id, link_index=link_index)

    def _make(self, kind: str, send_id: int, tail: bytes) -> str:
        if not 0 <= send_id <= _MAX_SEND_ID:
            raise ValueError(f"send id {send_id} is outside 0..{_MAX_SEND_ID}")
        payload = _HEAD.pack(_KINDS[kind], send_id) + tail
        return _b64encode(payload + self._mac(payload))

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, _DOMAIN + payload, hashlib.sha256).digest()[:_MAC_LEN]

    @staticmethod
    def _length(kind: str) -> int:
        return _HEAD.size + (_LINK.size if kind == "click" else 0) + _MAC_LEN


# Lowercase substrings of user agents that fetch links without a human: security
# gateways that "detonate" every URL, link-preview fetchers, HTTP libraries and crawlers.
_BOT_MARKERS = (
    "bot",
    "spider",
    "crawler",
    "crawl",
    "preview",
    "scanner",
    "headless",
    "phantomjs",
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "go-http-client",
    "okhttp",
    "java/",
    "apache-httpclient",
    "libwww-perl",
    "httpclient",
    "facebookexternalhit",
    "whatsapp",
    "barracuda",
    "proofpoint",
    "mimecast",
    "ironport",
    "forcepoint",
    "trendmicro",
    "symantec",
    "sophos",
    "fortiguard",
    "zscaler",
    "safelinks",
    "microsoft office",
    "microsoft outlook",
    "ms-office",
    "msoffice",
)
# Real devices whose names contain a marker ("CUBOT" phones) must not count as bots.
_NOT_BOTS = re.compile(r"cubot")
# Image proxies that fetch every image when the message arrives, not when it is read.
_MACHINE_OPEN_MARKERS = ("googleimageproxy", "ggpht.com", "yahoomailproxy")
# Apple Mail Privacy Protection fetches through Apple's proxy with this bare user agent.
_APPLE_MPP_AGENTS = frozenset({"mozilla/5.0"})


def is_bot_user_agent(ua: str | None) -> bool:
    """True when a click (or open) came from a scanner, prefetcher or script, not a person.

    Such events are stored with ``bot=True`` and earn no reward, so security gateways that
    follow every link cannot teach the policy that a variant is popular.
    """
    agent = " ".join((ua or "").split()).lower()
    if not agent:
        return True
    agent = _NOT_BOTS.sub("", agent)
    return any(marker in agent for marker in _BOT_MARKERS)


def is_machine_open(ua: str | None) -> bool:
    """True when an open pixel was fetched by a mail privacy proxy rather than a reader.

    Apple Mail Privacy Protection, Google's image proxy and Yahoo's mail proxy load images
    for every delivered message, so their opens say nothing about interest.
    """
    agent = " ".join((ua or "").split()).lower()
    if agent in _APPLE_MPP_AGENTS:
        return True
    return any(marker in agent for marker in _MACHINE_OPEN_MARKERS)
