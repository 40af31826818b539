"""The HTTP surface: routes and pages (click redirect, open pixel, unsubscribe, provider
webhooks, health), the limits any client meets, and uvicorn.

What a request hands on (the click intake and its log, the events) lives in
``engine.feedback``; this package serves it. Importing it is cheap: the app and the server
are loaded when first asked for.
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
