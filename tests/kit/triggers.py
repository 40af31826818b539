"""A project with a triggered campaign, its API served on loopback, and keys to call it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from engine.api_keys import create_key
from engine.app import Engine
from engine.web import BackgroundServer
from engine.web.api import create_api_app
from kit.project import Project

TRIGGERED = """
name = "pricedrop"
description = "A price dropped"
items_per_email = 2

[trigger]
context = ["kind"]
link_hosts = ["shop.example.com"]

[recipe]
name = "popularity"

[policy]
name = "{policy}"

[reward]
attribution_window = "1h"

[[variants]]
key = "short"
subject = "{{{{ event.title }}}} is cheaper"
template = "t/drop_short.html"

[[variants]]
key = "long"
subject = "Down to {{{{ event.price }}}}: {{{{ event.title }}}}"
template = "t/drop_long.html"
"""

DROP = """<html><body data-variant="{key}">
<p>Hi {{{{ recipient.first_name | default("there") }}}}, {{{{ event.title }}}} now costs
{{{{ event.price }}}}.</p>
<a href="{{{{ track_url(event.url) }}}}">See it</a>
{{% for item in items %}}<a href="{{{{ item_url(item) }}}}">{{{{ item.title }}}}</a>{{% endfor %}}
<a href="{{{{ unsubscribe_url }}}}">Unsubscribe</a>
</body></html>
"""


def add_triggered_campaign(project: Project, policy: str = "vw") -> None:
    """``pricedrop``: triggered, two variants whose templates use the event's data."""
    for key in ("short", "long"):
        path = project.root / "templates" / "t" / f"drop_{key}.html"
        path.write_text(DROP.format(key=key))
    path = project.root / "config" / "campaigns" / "pricedrop.toml"
    path.write_text(TRIGGERED.format(policy=policy))


def drop(recipient: str, **changes: Any) -> dict[str, Any]:
    """A trigger body for ``pricedrop``."""
    body: dict[str, Any] = {
        "recipient": {"id": recipient},
        "data": {
            "kind": "drop",
            "title": "Lamp",
            "price": "9.99",
            "url": "https://shop.example.com/lamp",
        },
    }
    return body | changes


@dataclass
class Api:
    """The API served for one engine: a client with a trigger+read key."""

    engine: Engine
    server: BackgroundServer
    client: httpx.Client
    key: str

    def headers(self, key: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"} | extra

    def post(self, path: str, body: Any, **headers: str) -> httpx.Response:
        return self.client.post(path, json=body, headers=self.headers(**headers))

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path, headers=self.headers())


@contextmanager
def serve_api(engine: Engine, *, release: bool = True) -> Iterator[Api]:
    """Serve ``engine``'s API on loopback (with its releaser unless ``release`` is off)."""
    _, key = create_key(engine.db, "tests", ["trigger", "read"])
    app = create_api_app(engine, release=release)
    server = BackgroundServer(engine, app=app, health_path="/v1/health")
    with server, httpx.Client(base_url=server.url, timeout=30, trust_env=False) as client:
        yield Api(engine, server, client, key)


@dataclass
class Hook:
    """One status webhook as received: its headers and raw body."""

    headers: dict[str, str]
    body: bytes


class HookReceiver:
    """A plain-http server on loopback that records every POST and answers 200."""

    def __init__(self) -> None:
        received: list[Hook] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(Hook({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, kind: str, timeout: float = 20) -> Hook:
        """The first hook whose body's type is ``kind``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for hook in list(self.received):
                if json.loads(hook.body)["type"] == kind:
                    return hook
            time.sleep(0.05)
        raise AssertionError(f"no {kind} hook; got {[h.body for h in self.received]}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
