"""Moved to ``engine.mime`` (issue 19): the engine's rehearsals need it and never import a plugin.

This module re-exports its names, with a ``DeprecationWarning``, for one release.
"""

from __future__ import annotations

import warnings

from engine.mime import (
    RESERVED_HEADERS,
    ascii_domain,
    build_mime,
    check_header,
    checked_headers,
    envelope_address,
    format_message_id,
    message_bytes,
    mime_bytes,
)

__all__ = [
    "RESERVED_HEADERS",
    "ascii_domain",
    "build_mime",
    "check_header",
    "checked_headers",
    "envelope_address",
    "format_message_id",
    "message_bytes",
    "mime_bytes",
]

warnings.warn(
    "plugins.delivery.mime moved: import it from engine.mime"
    " (the old path goes in the next release)",
    DeprecationWarning,
    stacklevel=2,
)
