"""Who a request comes from: the peer address, or for a trusted proxy the forwarded one.

Limits are kept per client, and a client is an address: an IPv4 address, or an IPv6 /64
(one subscriber usually holds a whole /64, so counting its addresses one by one would give
it 2^64 allowances). Only peers listed in ``[web] trusted_proxies`` may name the client in
``X-Forwarded-For``; anyone else's header is ignored, so no client can choose its own key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from functools import lru_cache

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=65536)
def client_key(address: str) -> str:
    """The key limits are counted under: the IPv4 address, or the IPv6 address's /64."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address  # a Unix socket or a test transport's name: itself
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


class ClientAddresses:
    """Resolves a request's client from its peer and, for trusted proxies, its headers."""

    def __init__(self, trusted_proxies: Sequence[str] = ()) -> None:
        """Trust ``X-Forwarded-For`` from peers in ``trusted_proxies`` (addresses or networks)."""
        self.networks: list[IPNetwork] = [
            ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies
        ]

    def trusted(self, address: str) -> bool:
        """True when ``address`` is one of the trusted proxies."""
        if not self.networks:
            return False
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(parsed in network for network in self.networks)

    def of(self, peer: str | None, headers: Mapping[str, str]) -> str:
        """The client key of a request from ``peer`` with ``headers``.

        Behind trusted proxies the client is the right-most ``X-Forwarded-For`` entry that
        is not itself a trusted proxy (entries further left were written by the client).
        """
        address = peer or "unknown"
        if self.trusted(address):
            hops = [hop.strip() for hop in headers.get("x-forwarded-for", "").split(",")]
            for hop in reversed([h for h in hops if h]):
                address = hop
                if not self.trusted(hop):
                    break
        return client_key(address)
