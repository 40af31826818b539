"""uvicorn for the tracking app: in the foreground (``serve``) or on a thread (tests, demo).

The server bounds what any client can take (``[web]`` settings, docs/security.md): the
connections and head deadline of ``engine.web.connections``, uvicorn's own proxy-header
handling off (``[web] trusted_proxies`` decides whom to believe), logs with tokens cut and
refusals at a bounded rate (``engine.web.logs``). ``serve`` raises the process's soft
descriptor limit to its hard limit and keeps ``FD_RESERVE`` descriptors out of the
connection cap (sockets accepted but not yet closed, the database, the event log,
``/health``), so the accept loop never runs out (asyncio logs every failed accept,
thousands a second).
"""

from __future__ import annotations

import gc
import logging
import resource
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import uvicorn

from engine.feedback.intake import Intake
from engine.web.app import create_app
from engine.web.clients import ClientAddresses
from engine.web.connections import ConnectionGuard, GuardedH11Protocol
from engine.web.logs import install_log_bounds

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.settings import WebSettings

log = logging.getLogger(__name__)

# asyncio accepts up to ``backlog`` sockets per loop iteration, and a refused one holds its
# descriptor for about three iterations more (transport, connection_made, close): so the
# listen backlog is kept small, and four batches are reserved beside the connection cap,
# with 128 more for the database, the event log, the writer and /health.
ACCEPT_BATCH = 128
FD_RESERVE = 4 * ACCEPT_BATCH + 128
KEEP_ALIVE = 5  # seconds an idle kept-alive connection stays open (uvicorn's default)


def raise_descriptor_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def connection_cap(web: WebSettings, descriptors: int) -> int:
    """``[web] max_connections``, lowered (with a warning) to fit ``descriptors``."""
    fits = max(16, descriptors - FD_RESERVE)
    if web.max_connections > fits:
        log.warning(
            "[web] max_connections lowered from %d to %d: this process may open only %d "
            "files (raise its limit: ulimit -n, or LimitNOFILE= under systemd)",
            web.max_connections,
            fits,
            descriptors,
        )
        return fits
    return web.max_connections


def _config(app: Any, web: WebSettings, log_level: str, **options: Any) -> uvicorn.Config:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    descriptors = soft if soft != resource.RLIM_INFINITY else 1 << 20
    guard = ConnectionGuard(
        ClientAddresses(web.trusted_proxies),
        max_connections=connection_cap(web, descriptors),
        per_client=web.max_connections_per_client,
        header_timeout=web.header_timeout_seconds,
    )
    config = uvicorn.Config(
        app,
        log_level=log_level,
        lifespan="on",
        http=GuardedH11Protocol.bind(guard),
        proxy_headers=False,  # uvicorn would trust 127.0.0.1's X-Forwarded-For by default
        timeout_keep_alive=KEEP_ALIVE,
        backlog=ACCEPT_BATCH,
        **options,
    )
    install_log_bounds()  # uvicorn.Config just (re)configured logging
    return config


def serve(
    engine: Engine,
    host: str,
    port: int,
    *,
    log_level: str = "warning",
    sock: socket.socket | None = None,
) -> None:
    """Run the tracking app with uvicorn in the foreground until interrupted.

    ``sock``, when given, is an already listening socket (inherited from a parent).
    """
    raise_descriptor_limit()
    # The database writer runs in a child process, off this process's GIL.
    intake = Intake(engine, project_dir=engine.settings.project_dir)
    _run(create_app(engine, intake), engine, host, port, log_level, sock)


def serve_api(
    engine: Engine,
    host: str,
    port: int,
    *,
    log_level: str = "warning",
    sock: socket.socket | None = None,
) -> None:
    """Run the HTTP API (``engine.web.api``) with uvicorn in the foreground until
    interrupted: its own event loop and port, with the releaser that sends triggers."""
    from engine.web.api import create_api_app  # lazy: the API's modules, when served

    raise_descriptor_limit()
    _run(create_api_app(engine), engine, host, port, log_level, sock)


def _run(
    app: Any, engine: Engine, host: str, port: int, log_level: str, sock: socket.socket | None
) -> None:
    server = uvicorn.Server(_config(app, engine.settings.web, log_level, host=host, port=port))
    # The engine's long-lived objects leave the collector's view: a full collection of
    # them costs 100-170 ms on a busy 2-core machine, a stall for every open connection.
    gc.collect()
    gc.freeze()
    server.run(sockets=[sock] if sock is not None else None)


class BackgroundServer:
    """uvicorn serving ``engine`` on a thread, for the demo and the tests.

    ``port=0`` binds a free port first; ``url`` names the real one. Entering waits until
    ``/health`` answers; leaving stops the server (its intake stores what it holds) and
    joins the thread. ``drain`` waits until every event recorded so far is stored.
    """

    def __init__(
        self,
        engine: Engine,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        startup_timeout: float = 15.0,
        app: Any = None,
        health_path: str = "/health",
    ) -> None:
        """Prepare (but do not start) a server for ``engine`` on ``host``:``port``: the
        tracking app, or ``app`` (the API's: ``engine.web.api.create_api_app``), ready once
        ``health_path`` answers."""
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.health_path = health_path
        self.intake = Intake(engine) if app is None else None
        self._app = create_app(engine, self.intake) if app is None else app
        self._web = engine.settings.web
        self._log_level = log_level
        self._server: uvicorn.Server | None = None

    @property
    def url(self) -> str:
        """The server's base URL, with the real port once started."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> BackgroundServer:
        """Bind, start the thread and wait until ``/health`` answers."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # Bind here and hand uvicorn the socket: the port is known, and nobody can take it
        # between choosing and listening.
        self._socket = sock = socket.create_server((self.host, self.port), family=family)
        self.port = int(sock.getsockname()[1])
        raise_descriptor_limit()  # as serve does: the connection cap is what fits in it
        # A fresh uvicorn server on every start: a stopped one stays stopped.
        self._server = server = uvicorn.Server(_config(self._app, self._web, self._log_level))
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="tailormail-web", daemon=True
        )
        self._thread.start()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._thread is None or not self._thread.is_alive():
                break  # uvicorn gave up (it logs why)
            try:
                # trust_env=False: a configured HTTP proxy must not see loopback requests.
                health = f"{self.url}{self.health_path}"
                if httpx.get(health, timeout=1.0, trust_env=False).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server on {self.url} did not answer {self.health_path}")

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until the events recorded so far are in the database (tests, demo)."""
        assert self.intake is not None, "the API server records no events"
        if not self.intake.drain(timeout):
            raise TimeoutError(f"{self.intake.pending} events still wait for the database")

    def stop(self) -> None:
        """Ask uvicorn to exit, wait for the thread and release the socket."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
