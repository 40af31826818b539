"""What ``serve`` needs before and after serving: its port, bound first, and a clean stop.

The port is bound before the process campaigns for scheduler leadership or says it is
serving, so a port in use is one line naming it and the setting, and nothing else starts.
Ctrl-C and SIGTERM end the server (uvicorn shuts down, then re-raises the signal) and let
the caller stop the scheduler and the intake's writer, with no traceback.
"""

from __future__ import annotations

import errno
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from engine.errors import ConfigError

_WHY = {
    errno.EADDRINUSE: "is already in use (another `tailormail serve`, or another program)",
    errno.EACCES: "needs privileges this process does not have",
    errno.EADDRNOTAVAIL: "is on an address this machine does not have",
}


def listen(host: str, port: int, table: str = "web") -> socket.socket:
    """A socket listening on ``host``:``port``, or ``ConfigError`` naming the port and
    the settings that choose it (``[table] host`` and ``port``: ``web``, or ``api``)."""
    if not 0 <= port < 65536:
        raise ConfigError(
            f"port {port} is not a port: choose one from 0 (any free port) to 65535 with "
            f"--port or [{table}] port in config/tailormail.toml"
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(
            f"host {host!r} is not an address of this machine nor a name it can resolve "
            f"({exc.strerror or exc}): choose another with --host or [{table}] host in "
            "config/tailormail.toml (127.0.0.1 serves this machine only)"
        ) from None
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        why = _WHY.get(exc.errno or 0, f"cannot be listened on ({exc.strerror or exc})")
        raise ConfigError(
            f"port {port} on {host} {why}: stop what holds it, or choose another with "
            f"--port or [{table}] port (and --host or [{table}] host) in config/tailormail.toml"
        ) from None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def stopped_by_signal() -> Iterator[None]:
    """Run the server until Ctrl-C or SIGTERM; either ends the block quietly."""
    previous = signal.signal(signal.SIGTERM, _interrupt)  # uvicorn re-raises it after stopping
    try:
        yield
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
