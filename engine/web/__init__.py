"""The tracking web tier: the click intake and its log, the Starlette app, uvicorn.

Importing this package is cheap (the send path needs only ``engine.tokens``); the app
and the server are loaded when first asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.web.app import PIXEL, create_app
    from engine.web.server import BackgroundServer, serve

__all__ = ["PIXEL", "BackgroundServer", "create_app", "serve"]
_HOMES = {
    "PIXEL": "engine.web.app",
    "create_app": "engine.web.app",
    "BackgroundServer": "engine.web.server",
    "serve": "engine.web.server",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'engine.web' has no attribute {name!r}")
