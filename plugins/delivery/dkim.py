"""Optional DKIM signing (dkimpy, the ``dkim`` extra), applied to a message's final bytes.

The signature covers the List-Unsubscribe headers, so a mailbox provider can trust the
one-click unsubscribe (RFC 8058 requires them to be signed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from engine.errors import ConfigError
from plugins.delivery.options import BackendOptions

SIGNED_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)
"""The headers signed by default (those a message lacks are left out of ``h=``)."""


class DKIMOptions(BackendOptions):
    """``[delivery.<backend>.dkim]``: the signing domain, selector and private key (PEM)."""

    domain: str = Field(min_length=1)
    selector: str = Field(min_length=1)
    private_key_file: str = Field(min_length=1)
    headers: tuple[str, ...] = SIGNED_HEADERS

    @field_validator("headers")
    @classmethod
    def _from_is_signed(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "from" not in {name.lower() for name in value}:
            raise ValueError("must include 'From' (RFC 6376 requires it)")
        return value


class DKIMSigner:
    """Signs messages with one key; built at start-up so a bad key fails there."""

    def __init__(self, options: DKIMOptions, base: Path | None = None, *, where: str) -> None:
        """``where`` names the options in errors (``delivery.smtp.dkim``)."""
        try:
            # lazy: dkimpy (and its DNS library) only when a message is signed
            import dkim
        except ImportError:
            raise ConfigError(
                f"{where}: DKIM signing needs dkimpy; "
                "install it with `pip install 'tailormail[dkim]'`"
            ) from None
        self._dkim: Any = dkim
        path = Path(options.private_key_file)
        if not path.is_absolute() and base is not None:
            path = base / path
        try:
            self.key = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{where}.private_key_file: cannot read {path}: {exc}") from None
        if b"PRIVATE KEY-----" not in self.key:
            raise ConfigError(f"{where}.private_key_file: {path} is not a PEM private key")
        self.domain = options.domain.encode()
        self.selector = options.selector.encode()
        self.headers = [name.lower().encode() for name in options.headers]

    def sign(self, data: bytes) -> bytes:
        """``data`` (a whole message, CRLF line ends) with a DKIM-Signature header on top."""
        present = {
            line.split(b":", 1)[0].strip().lower()
            for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            if line and not line[:1].isspace()
        }
        signature: bytes = self._dkim.sign(
            data,
            self.selector,
            self.domain,
            self.key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[name for name in self.headers if name in present],
            linesep=b"\r\n",
        )
        return signature + data
