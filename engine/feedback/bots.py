"""Reward hygiene: clicks by scanners and prefetchers, opens by mail privacy proxies.

Such events are stored, flagged, and earn no reward. (The tokens of tracked links live in
``engine.tokens``.)
"""

from __future__ import annotations

import re

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
