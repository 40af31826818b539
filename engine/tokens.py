"""Tokens in tracked URLs (``/c/``, ``/o/``, ``/u/``): encrypted, authenticated, self-contained.

Version 2, minted now, is AES-256-GCM over the kind, the send id and what the handler needs
without a database: a click token carries its link index and target URL, an unsubscribe
token its campaign. A link reads as noise (no URL, send id or address shows), and any edit
fails authentication, so a token cannot be bent into an open redirect. The nonce is
synthetic (an HMAC of the plaintext under a key of its own): the same link of the same
message always gets the same token, and two different plaintexts never share a nonce.

Version 1 (ids only, HMAC-signed, minted by earlier releases) still verifies, so links in
inboxes keep working; their click target is looked up in the ledger.

After a rotation (``tailormail secret rotate``) new tokens use the current secret, and a
token is accepted when any of the current and previous secrets verifies it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KINDS = {"click": 1, "open": 2, "unsubscribe": 3}
TEST_SEND_ID = 0
"""The send id of previews and test sends (no ledger row ever has id 0): their links
redirect and their pages show, but the web app records nothing and unsubscribes nobody."""
_HEAD = struct.Struct(">BQ")  # kind, send id
_LINK = struct.Struct(">H")  # link index, click tokens only
_MAX_SEND_ID = 2**64 - 1
_MAX_LINK_INDEX = 2**16 - 1
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]{1,8192}")

_V2 = b"\x02"
_NONCE_LEN = 12
_TAG_LEN = 16
_V2_MIN = len(_V2) + _NONCE_LEN + _HEAD.size + _TAG_LEN  # 38 bytes: never a v1 length
_MAX_TAIL = 6000  # URL or campaign bytes: keeps a token under 8 KiB, which every server takes

_V1_MAC_LEN = 16
_V1_DOMAIN = b"tailormail-token-v1\x00"
_V1_LENGTHS = {
    kind: _HEAD.size + (_LINK.size if kind == "click" else 0) + _V1_MAC_LEN for kind in KINDS
}


@dataclass(frozen=True)
class TokenData:
    """What a verified token says.

    ``url`` is the click target (version 2 click tokens; None for version 1, whose target
    is in the ledger); ``campaign`` names the campaign of a version 2 unsubscribe token.
    """

    kind: str
    send_id: int
    link_index: int | None = None
    url: str | None = None
    campaign: str | None = None
    version: int = 2


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(token: str) -> bytes | None:
    """The canonical base64url decoding, or None (base64's spare low bits would otherwise
    let several strings decode to one token)."""
    if not isinstance(token, str) or not _TOKEN_CHARS.fullmatch(token):
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if hmac.compare_digest(_b64encode(raw), token) else None


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown token kind {kind!r}; use one of {sorted(KINDS)}")


def _head(kind: str, send_id: int) -> bytes:
    if not 0 <= send_id <= _MAX_SEND_ID:
        raise ValueError(f"send id {send_id} is outside 0..{_MAX_SEND_ID}")
    return _HEAD.pack(KINDS[kind], send_id)


class Tokens:
    """Mints version 2 tokens with the current secret; verifies version 2 and version 1
    tokens made with the current or any previous secret."""

    def __init__(self, secret: bytes, previous: Sequence[bytes] = ()) -> None:
        """``secret`` is the project secret (every web worker must share it);
        ``previous`` are the secrets it replaced, still accepted when verifying."""
        if not secret or not all(previous):
            raise ValueError("the tracking secret must not be empty")
        self._aead = AESGCM(_derive(secret, b"tailormail token v2: AES-256-GCM key"))
        self._nonce_key = _derive(secret, b"tailormail token v2: synthetic nonce key")
        self._v1 = LegacyTokens(secret)
        self._previous = [Tokens(old) for old in previous if old != secret]

    def click(self, send_id: int, link_index: int, url: str) -> str:
        """A token for the ``link_index``-th link (``url``) of the message of ``send_id``."""
        if not 0 <= link_index <= _MAX_LINK_INDEX:
            raise ValueError(f"link index {link_index} is outside 0..{_MAX_LINK_INDEX}")
        return self._seal(_head("click", send_id) + _LINK.pack(link_index) + _tail(url))

    def open(self, send_id: int) -> str:
        """A token for the open pixel of the message of ``send_id``."""
        return self._seal(_head("open", send_id))

    def unsubscribe(self, send_id: int, campaign: str = "") -> str:
        """A token for the unsubscribe link of the message of ``send_id`` (of ``campaign``)."""
        return self._seal(_head("unsubscribe", send_id) + _tail(campaign))

    def verify(self, token: str, kind: str) -> TokenData | None:
        """The token's data if it is authentic and of ``kind``, else None; never raises.

        ``kind`` is "click", "open" or "unsubscribe"; any other name is a programming
        error and raises ``ValueError``.
        """
        _check_kind(kind)
        raw = _b64decode(token)
        if raw is None:
            return None
        for tokens in (self, *self._previous):
            data = tokens._verify_raw(raw, kind)
            if data is not None:
                return data
        return None

    def _verify_raw(self, raw: bytes, kind: str) -> TokenData | None:
        """The data of decoded token bytes ``raw`` if this secret made them."""
        if len(raw) == _V1_LENGTHS[kind]:
            return self._v1.verify_raw(raw, kind)
        if len(raw) < _V2_MIN or raw[:1] != _V2:
            return None
        nonce, sealed = raw[1 : 1 + _NONCE_LEN], raw[1 + _NONCE_LEN :]
        try:
            plain = self._aead.decrypt(nonce, sealed, _V2)
        except InvalidTag:
            return None
        kind_byte, send_id = _HEAD.unpack_from(plain)
        if kind_byte != KINDS[kind]:
            return None
        rest = plain[_HEAD.size :]
        try:
            if kind == "click":
                (index,) = _LINK.unpack_from(rest)
                return TokenData(kind, send_id, index, url=rest[_LINK.size :].decode())
            if kind == "unsubscribe":
                return TokenData(kind, send_id, campaign=rest.decode() or None)
        except (struct.error, UnicodeDecodeError):  # authentic but malformed: not ours
            return None
        return TokenData(kind, send_id) if not rest else None

    def _seal(self, plain: bytes) -> str:
        nonce = hmac.new(self._nonce_key, plain, hashlib.sha256).digest()[:_NONCE_LEN]
        return _b64encode(_V2 + nonce + self._aead.encrypt(nonce, plain, _V2))


def _tail(text: str) -> bytes:
    data = text.encode()
    if len(data) > _MAX_TAIL:
        raise ValueError(f"{len(data)} bytes is too long for a tracked link (at most {_MAX_TAIL})")
    return data


class LegacyTokens:
    """The version 1 format: ids only, a 128-bit truncated HMAC-SHA256.

    Nothing mints these any more except tests; verifying them keeps old links working.
    """

    def __init__(self, secret: bytes) -> None:
        """``secret`` is the project secret that signed the tokens."""
        if not secret:
            raise ValueError("the tracking secret must not be empty")
        self._secret = secret

    def click(self, send_id: int, link_index: int) -> str:
        """A version 1 click token (ids only)."""
        return self._make(_head("click", send_id) + _LINK.pack(link_index))

    def open(self, send_id: int) -> str:
        """A version 1 open token."""
        return self._make(_head("open", send_id))

    def unsubscribe(self, send_id: int) -> str:
        """A version 1 unsubscribe token."""
        return self._make(_head("unsubscribe", send_id))

    def verify_raw(self, raw: bytes, kind: str) -> TokenData | None:
        """The data of decoded token bytes ``raw`` if they are an authentic v1 ``kind``."""
        if len(raw) != _V1_LENGTHS[kind]:
            return None
        payload, mac = raw[:-_V1_MAC_LEN], raw[-_V1_MAC_LEN:]
        if not hmac.compare_digest(self._mac(payload), mac):
            return None
        kind_byte, send_id = _HEAD.unpack_from(payload)
        if kind_byte != KINDS[kind]:
            return None
        link_index = _LINK.unpack_from(payload, _HEAD.size)[0] if kind == "click" else None
        return TokenData(kind, send_id, link_index, version=1)

    def _make(self, payload: bytes) -> str:
        return _b64encode(payload + self._mac(payload))

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, _V1_DOMAIN + payload, hashlib.sha256).digest()[:_V1_MAC_LEN]
