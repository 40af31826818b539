"""Real mail needs real addresses: what a project must change before people get its mail.

A delivery backend that reaches other machines (``DeliveryBackend.reaches_other_machines``:
SMTP to another host, every provider) delivers to real people. Their mail must not
point its links at this machine or at a private network, nor travel over plain http://,
nor come from a domain reserved for examples. Names and literal addresses are judged
as written: nothing is looked up in DNS at start-up.
``[delivery] allow_test_addresses = true`` sends such mail anyway, on purpose (staging).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from email.utils import parseaddr
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from engine.campaigns import Campaign
    from engine.settings import Settings
    from engine.types import DeliveryBackend

ALLOW_KEY = "[delivery] allow_test_addresses = true"
# RFC 2606 / RFC 6761: reserved for documentation and tests, never anyone's real mail.
EXAMPLE_DOMAINS = ("example.com", "example.org", "example.net")
RESERVED_SUFFIXES = ("example", "invalid", "test", "localhost")
# Names that only resolve inside a home or company network (RFC 6762, 8375, ICANN).
PRIVATE_SUFFIXES = ("localhost", "local", "internal", "home.arpa")
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)


def _under(name: str, suffixes: Iterable[str]) -> str | None:
    """The suffix of ``suffixes`` that ``name`` is or ends with (``a.example.com``)."""
    name = name.lower().rstrip(".")
    return next((s for s in suffixes if name == s or name.endswith("." + s)), None)


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None
    # ::ffff:127.0.0.1 is 127.0.0.1 (Python 3.11's ipaddress does not say so itself).
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


def is_this_machine(host: str) -> bool:
    """``localhost`` (and ``*.localhost``), a loopback or the unspecified address."""
    address = _literal(host)
    if address is not None:
        return address.is_loopback or address.is_unspecified
    return _under(host, ("localhost",)) is not None


def unreachable_reason(host: str) -> str | None:
    """Why recipients on the internet cannot reach ``host``, or None when they may."""
    if is_this_machine(host):
        return f"points at this machine ({host})"
    address = _literal(host)
    if address is not None and (
        address.is_private or address.is_link_local or address.is_reserved or address in _SHARED
    ):
        return f"points at a private network address ({host})"
    suffix = _under(host, PRIVATE_SUFFIXES)
    if suffix is not None:
        return f"points at a private network name ({host}, under .{suffix})"
    return None


def reserved_domain(domain: str) -> str | None:
    """The reserved example or test domain ``domain`` is (or is under), or None."""
    return _under(domain, EXAMPLE_DOMAINS) or _under(domain, RESERVED_SUFFIXES)


def _sender_problem(key: str, sender: str) -> str | None:
    domain = parseaddr(sender)[1].rpartition("@")[2]
    reserved = reserved_domain(domain)
    if reserved is None:
        return None
    return (
        f"{key}: {sender!r} is at {domain}, a domain reserved for examples and tests; "
        "use an address at your own domain"
    )


def _tracking_problem(url: str) -> str | None:
    parts = urlsplit(url)
    host = parts.hostname or ""
    reasons = []
    if parts.scheme == "http":
        reasons.append("is plain http://")
    reason = unreachable_reason(host)
    if reason is not None:
        reasons.append(f"{reason}, which recipients cannot open")
    elif reserved_domain(host) is not None:
        reasons.append(f"points at {host}, a domain reserved for examples and tests")
    if not reasons:
        return None
    return (
        f"tracking_base_url: {url!r} {' and '.join(reasons)}; set the public https:// "
        "address where `tailormail serve` answers"
    )


def real_mail_problems(
    settings: Settings, backend: DeliveryBackend, campaigns: Iterable[Campaign] = ()
) -> list[str]:
    """What must change before ``backend`` sends real mail, one line per key to change.

    Empty when the backend stays on this machine (outbox, memory, SMTP to localhost),
    when ``[delivery] allow_test_addresses`` is on, or when nothing is wrong. Each line
    names the key (``tracking_base_url``, ``from_address``, a campaign's ``from_address``).
    """
    if settings.delivery.allow_test_addresses or not backend.reaches_other_machines():
        return []
    return address_problems(settings, campaigns)


def address_problems(settings: Settings, campaigns: Iterable[Campaign] = ()) -> list[str]:
    """What real mail would refuse in these settings, whatever the backend and the staging
    switch (for ``tailormail check``: is the project ready for real mail?)."""
    found = [
        _set_by(settings, "tracking_base_url", _tracking_problem(settings.tracking_base_url)),
        _set_by(settings, "from_address", _sender_problem("from_address", settings.from_address)),
    ]
    for campaign in campaigns:
        if campaign.from_address:
            key = f"campaign {campaign.name!r}: from_address"
            found.append(_sender_problem(key, campaign.from_address))
    return [problem for problem in found if problem is not None]


def _set_by(settings: Settings, key: str, problem: str | None) -> str | None:
    """``problem`` naming the environment variable that set ``key``, when one did."""
    variables = settings.env_variables(key)
    if problem is None or not variables:
        return problem
    return f"{problem} (set by {', '.join(variables)})"


def not_ready_message(backend: str, problems: list[str]) -> str:
    """The start-up error for ``problems``: the backend, each key to change, the way out."""
    lines = "\n".join(f"  {problem}" for problem in problems)
    return (
        f"delivery.backend {backend!r} sends real mail to other machines, and this "
        f"project is not ready for it:\n{lines}\n"
        f"(to send test addresses anyway, for staging: {ALLOW_KEY})"
    )
