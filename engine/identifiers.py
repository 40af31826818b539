"""Identifiers that leave in a message: keyed, so they reveal and enumerate nothing.

The Message-ID, the ``X-Tailormail-Send-Id`` header and the send id in provider metadata
(Mailgun shows its variables to recipients) all carry the send's *reference*: an HMAC of
the ledger id under a key derived from the project secret. Without the secret nobody can
tell a reference from noise, reverse it to a send or a recipient, or guess a neighbour's.
The ledger stores each send's reference (and its Message-ID), so provider events join by
lookup, whatever the secret is after a rotation; events of mail sent before references
existed still carry the plain numeric send id, which still joins. The decision id stays
inside: it seeds the sampling and never leaves in a header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

REF_LENGTH = 32
"""Characters of a reference: 160 bits in lowercase base32 (letters and 2-7)."""
_REF = re.compile(rf"[a-z2-7]{{{REF_LENGTH}}}")
_PURPOSE = b"tailormail send reference v1"


class SendRefs:
    """Makes the reference of a send from its ledger id under the project secret."""

    def __init__(self, secret: bytes) -> None:
        """``secret`` is the current project secret."""
        if not secret:
            raise ValueError("the project secret must not be empty")
        self._key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PURPOSE).derive(
            secret
        )

    def ref(self, send_id: int) -> str:
        """The send's reference: ``REF_LENGTH`` characters, the same for the same send."""
        digest = hmac.new(self._key, struct.pack(">Q", send_id), hashlib.sha256).digest()
        return base64.b32encode(digest[:20]).decode("ascii").lower()

    def message_id(self, send_id: int, domain: str) -> str:
        """The Message-ID of the send's email: ``<reference@domain>``."""
        return f"<{self.ref(send_id)}@{domain}>"


def is_send_ref(value: object) -> bool:
    """Whether ``value`` has the form of a send reference (no secret needed to check)."""
    return isinstance(value, str) and _REF.fullmatch(value) is not None
