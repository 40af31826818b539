"""The outbound boundary of status webhooks: which URLs tailormail posts to, how a delivery
is signed (Standard Webhooks), and the POST itself.

A subscriber chooses the URL, so the URL is hostile input. It must be https (http only when
allowed), and its host must resolve only to public addresses: no private, loopback,
link-local (cloud metadata), carrier-grade NAT, unique-local, multicast, reserved or
unspecified address, in any spelling (``2130706433``, ``0x7f.1``, ``[::ffff:10.0.0.1]``),
unless private targets are allowed. The check runs when a URL is subscribed and again before
every delivery, and the connection goes to the very address that was checked (the Host
header and the TLS SNI keep the name, and the certificate is verified against the name), so
a DNS answer that changes in between (rebinding) cannot turn a delivery inward. Redirects
are never followed, and at most ``RESPONSE_LIMIT`` bytes of an answer are read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime

import httpx

from engine.errors import TailormailError

RESPONSE_LIMIT = 4096
"""Bytes of a subscriber's answer read at most (only its status counts)."""
URL_LIMIT = 2048
SECRET_PREFIX = "whsec_"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
"""``(host, port) -> addresses``: how a host name becomes the addresses to check and use."""

# Ranges named for what they are; anything else not globally routable is refused too.
_NAMED: tuple[tuple[str, str], ...] = (
    ("169.254.169.254/32", "the cloud metadata address"),
    ("100.64.0.0/10", "a carrier-grade NAT address"),
    ("192.0.0.0/24", "an IETF protocol address"),
    ("fc00::/7", "a unique-local address"),
)
_NAMED_NETWORKS = tuple((ipaddress.ip_network(net), name) for net, name in _NAMED)
_KINDS = (
    ("is_unspecified", "an unspecified address"),
    ("is_loopback", "a loopback address"),
    ("is_link_local", "a link-local address"),
    ("is_multicast", "a multicast address"),
    ("is_private", "a private address"),
    ("is_reserved", "a reserved address"),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutboundURLError(TailormailError):
    """A subscriber URL tailormail will not post to: the message names the problem."""


@dataclass(frozen=True)
class OutboundPolicy:
    """How far status webhooks may reach (the ``[api.webhooks]`` settings)."""

    allow_private: bool = False  # private, loopback, link-local... targets (tests, intranets)
    allow_http: bool = False  # plain http targets
    max_attempts: int = 10  # the first try and one retry per step of the backoff schedule
    timeout_seconds: float = 10.0  # per phase of a request: connect, send, each read

    @classmethod
    def from_settings(cls, settings: object) -> OutboundPolicy:
        """The policy from an object with some of these attributes (a settings table);
        what it lacks keeps its default."""
        values = {
            f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)
        }
        return cls(**values)


@dataclass(frozen=True)
class Target:
    """A checked URL: the name to send as Host and SNI, and the addresses checked for it."""

    url: httpx.URL
    host: str
    port: int
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class PostResult:
    """What one POST came to: the status code if there was an answer, an error unless 2xx."""

    status_code: int | None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        """Whether the subscriber took it (a 2xx answer)."""
        return self.error is None


def new_secret() -> str:
    """A new signing secret: ``whsec_`` and 256 random bits in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (ValueError when it is not one)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError("the secret must be 'whsec_' followed by base64") from None


def signature(key: bytes, message_id: str, timestamp: int | str, body: bytes) -> str:
    """The Standard Webhooks ``v1`` signature of ``body``: HMAC-SHA256 over
    ``{id}.{timestamp}.{body}``, in base64 (a verifier passes the header's text as is)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(secret: str, message_id: str, body: bytes, now: datetime) -> dict[str, str]:
    """The ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``
    headers of one attempt to deliver ``body``."""
    timestamp = int(now.timestamp())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(decode_secret(secret), message_id, timestamp, body),
    }


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order (numeric hosts in any
    notation the C library accepts, as a connection would read them)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def address_problem(address: Address) -> str | None:
    """Why a status webhook may not go to ``address``, or None for a public one. An IPv6
    address that carries an IPv4 one (mapped, 6to4, Teredo, NAT64) is judged by both."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = [address.ipv4_mapped, address.sixtofour]
        inner += [address.teredo[1] if address.teredo else None]
        if address in _NAT64:
            inner.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        for embedded in inner:
            problem = address_problem(embedded) if embedded is not None else None
            if problem is not None:
                return f"{problem} ({embedded}) in IPv6 form"
        if address.ipv4_mapped is not None:
            return None  # judged by the IPv4 address it maps
    for network, name in _NAMED_NETWORKS:
        if address.version == network.version and address in network:
            return name
    for attribute, name in _KINDS:
        if getattr(address, attribute):
            return name
    return None if address.is_global else "an address that is not globally routable"


def parse_url(url: str, policy: OutboundPolicy) -> httpx.URL:
    """``url`` if its form may be a subscriber's (scheme, host, no credentials); raises
    ``OutboundURLError`` naming the problem."""
    text = url.strip()
    if not text or len(text) > URL_LIMIT:
        raise OutboundURLError(f"a webhook URL must be 1 to {URL_LIMIT} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise OutboundURLError(f"the webhook URL {text!r} holds spaces or control characters")
    try:
        parsed = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise OutboundURLError(f"{text!r} is not a valid URL: {exc}") from None
    if parsed.scheme == "http" and not policy.allow_http:
        raise OutboundURLError(f"the webhook URL {text} must be https (http is not allowed)")
    if parsed.scheme not in ("https", "http"):
        raise OutboundURLError(f"the webhook URL {text} must be https")
    if not parsed.host:
        raise OutboundURLError(f"the webhook URL {text} has no host")
    if parsed.userinfo:
        raise OutboundURLError(f"the webhook URL {text} must not hold a user name or password")
    return parsed


def check_url(
    url: str,
    policy: OutboundPolicy,
    *,
    allow_private: bool = False,
    resolve: Resolver = resolve_host,
) -> Target:
    """Check ``url`` and every address its host resolves to now; the ``Target`` to post to.

    Raises ``OutboundURLError`` naming the URL and the problem: its form, a host that does
    not resolve, or an address that is not public (unless the policy or ``allow_private``
    allows private ones).
    """
    parsed = parse_url(url, policy)
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise OutboundURLError(f"the webhook URL {parsed}: cannot resolve {host}: {exc}") from None
    if not addresses:
        raise OutboundURLError(f"the webhook URL {parsed}: {host} resolves to no address")
    if not (policy.allow_private or allow_private):
        for text in addresses:
            problem = address_problem(ipaddress.ip_address(text))
            if problem is not None:
                where = f"{host} is" if text == host else f"{host} resolves to {text},"
                raise OutboundURLError(
                    f"the webhook URL {parsed} is refused: {where} {problem}; "
                    "webhooks go to public addresses only"
                )
    return Target(parsed, host, port, tuple(addresses))


def new_client(policy: OutboundPolicy) -> httpx.Client:
    """An HTTP client for deliveries: no proxy from the environment (it would connect to
    the name, not the checked address), no kept-alive connection (a connection verified
    for one name must not carry another name's request)."""
    return httpx.Client(
        timeout=policy.timeout_seconds,
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def post(
    client: httpx.Client,
    target: Target,
    body: bytes,
    headers: dict[str, str],
    policy: OutboundPolicy,
) -> PostResult:
    """POST ``body`` to ``target``, connected to one of its checked addresses (the next one
    when a connection fails), never following a redirect."""
    default_port = 443 if target.url.scheme == "https" else 80
    name = f"[{target.host}]" if ":" in target.host else target.host
    host_header = name if target.port == default_port else f"{name}:{target.port}"
    sent = headers | {
        "Host": host_header,
        "Content-Type": "application/json",
        "User-Agent": "tailormail-webhooks",
        "Connection": "close",
    }
    error = "no address to connect to"
    for address in target.addresses:
        request = client.build_request(
            "POST",
            target.url.copy_with(host=address),
            content=body,
            headers=sent,
            extensions={"sni_hostname": target.host},
            timeout=policy.timeout_seconds,
        )
        try:
            response = client.send(request, stream=True, follow_redirects=False)
        except httpx.ConnectError as exc:
            error = f"cannot connect to {address}: {printable(str(exc))}"
            continue
        except httpx.HTTPError as exc:
            return PostResult(None, f"{type(exc).__name__}: {printable(str(exc))}")
        try:
            answer = read_some(response, time.monotonic() + policy.timeout_seconds)
        finally:
            response.close()
        if response.is_success:
            return PostResult(response.status_code)
        moved = " (redirects are not followed)" if response.is_redirect else ""
        excerpt = printable(answer.decode("utf-8", "replace"), 200)
        reason = f"HTTP {response.status_code}{moved}" + (f": {excerpt}" if excerpt else "")
        return PostResult(response.status_code, reason)
    return PostResult(None, error)


def read_some(response: httpx.Response, deadline: float) -> bytes:
    """At most ``RESPONSE_LIMIT`` bytes of the answer's body, until ``deadline``
    (``time.monotonic()``); what could not be read is left unread."""
    taken = bytearray()
    try:
        for chunk in response.iter_raw():
            taken += chunk
            if len(taken) >= RESPONSE_LIMIT or time.monotonic() > deadline:
                break
    except httpx.HTTPError:
        pass  # the status line is what counts
    return bytes(taken[:RESPONSE_LIMIT])


def printable(text: str, limit: int = 300) -> str:
    """``text`` as one line of at most ``limit`` printable characters (it may come from a
    subscriber's server: shown and stored as data)."""
    flat = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(flat.split())[:limit]
