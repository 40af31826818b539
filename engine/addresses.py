"""Email addresses: one spelling per mailbox, and sender addresses safe to put in a header.

A recipient's address is stored lowercased, local part included, so two spellings of one
mailbox are one identity (as listmonk does; no mailbox provider in use treats the local
part's case as significant). An internationalized domain is stored in its ASCII (IDNA)
form; a non-ASCII local part needs SMTPUTF8, which not every backend and relay offers,
so such an address is rejected where it enters (the import), never at send time.
"""

from __future__ import annotations

import re
from email.utils import getaddresses

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@(?P<domain>{_LABEL}(?:\.{_LABEL})+)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_LOCAL = 64
MAX_ADDRESS = 320


def normalize_address(value: str) -> str:
    """``value`` as stored: trimmed, lowercased, its domain in IDNA; ``ValueError`` if not
    a deliverable address (the message says why, for an import error or a config error)."""
    text = value.strip()
    if _CONTROL.search(text):
        raise ValueError(f"{value!r} contains a control character (CR, LF, tab...)")
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"{value!r} is not an email address")
    if not local.isascii():
        raise ValueError(
            f"{value!r} has non-ASCII characters before the @, which needs SMTPUTF8; "
            "tailormail does not send such addresses"
        )
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"{value!r} has a domain that is not a valid host name") from None
    address = f"{local}@{domain}".lower()
    match = _ADDRESS.fullmatch(address)
    if not match or len(match["local"]) > MAX_LOCAL or len(address) > MAX_ADDRESS:
        raise ValueError(f"{value!r} is not an email address")
    return address


def address_key(value: str) -> str:
    """The identity of an address: two spellings of one mailbox give the same key."""
    return value.strip().lower()


def check_sender(value: str) -> str:
    """A ``From`` value (``addr`` or ``Name <addr>``) safe for a header, or ``ValueError``."""
    if _CONTROL.search(value):
        raise ValueError("contains a control character (CR, LF, tab...): header injection")
    found = getaddresses([value])
    if len(found) != 1 or not _ADDRESS.fullmatch(found[0][1]) or " " in value.split("<")[-1]:
        raise ValueError(f"{value!r} is not one email address (use addr or 'Name <addr>')")
    return value
