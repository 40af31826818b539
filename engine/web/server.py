"""uvicorn for the tracking app: in the foreground (``serve``) or on a thread (tests, demo).

Tokens never reach a log: the access log shows ``/c/…`` with the token cut, because a
token is a credential (it unsubscribes its recipient) and logs travel further than links.
"""

from __future__ import annotations

import gc
import logging
import re
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import uvicorn

from engine.web.app import create_app
from engine.web.intake import Intake

if TYPE_CHECKING:
    from engine.app import Engine

_TOKEN_PATH = re.compile(r"(/[cou]/)[A-Za-z0-9_-]+")
_LOGGERS = ("uvicorn.access", "uvicorn.error")


def redact(text: str) -> str:
    """``text`` with every tracking token cut: ``/c/<token>`` becomes ``/c/…``."""
    return _TOKEN_PATH.sub(r"\1…", text)


class RedactTokens(logging.Filter):
    """Cuts tracking tokens out of log records (uvicorn's access log passes the path as an
    argument, so the arguments are redacted as well as the message)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; never drops it."""
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def install_log_redaction() -> None:
    """Put ``RedactTokens`` on uvicorn's loggers (after uvicorn configured its logging)."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


def _config(app: Any, log_level: str, **options: Any) -> uvicorn.Config:
    config = uvicorn.Config(app, log_level=log_level, lifespan="on", **options)
    install_log_redaction()  # uvicorn.Config just (re)configured logging
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
    # The database writer runs in a child process, off this process's GIL.
    intake = Intake(engine, project_dir=engine.settings.project_dir)
    app = create_app(engine, intake)
    server = uvicorn.Server(_config(app, log_level, host=host, port=port))
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
    ) -> None:
        """Prepare (but do not start) a server for ``engine`` on ``host``:``port``."""
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.intake = Intake(engine)
        self._app = create_app(engine, self.intake)
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
        # A fresh uvicorn server on every start: a stopped one stays stopped.
        self._server = server = uvicorn.Server(_config(self._app, self._log_level))
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
                if httpx.get(f"{self.url}/health", timeout=1.0, trust_env=False).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the tracking server on {self.url} did not answer /health")

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until the events recorded so far are in the database (tests, demo)."""
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
