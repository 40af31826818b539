"""Serve only the tracking app (no scheduler): ``python -m engine.web [-p DIR] [--port N]``,
or, with ``--api``, only the HTTP API (with its releaser).

For extra web processes beside ``tailormail serve`` (each keeps its own event log), and
for the benchmarks and tests, which pass an inherited listening socket with ``--fd``.
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from engine.app import Engine
from engine.settings import load_settings
from engine.web.server import serve, serve_api


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m engine.web", description=__doc__)
    parser.add_argument("-p", "--project", type=Path, default=None, help="project directory")
    parser.add_argument("--host", default=None, help="interface (default: settings web.host)")
    parser.add_argument("--port", type=int, default=None, help="port (default: web.port)")
    parser.add_argument("--fd", type=int, default=None, help="an inherited listening socket")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")
    parser.add_argument("--api", action="store_true", help="serve the HTTP API ([api])")
    args = parser.parse_args(argv)
    with Engine(load_settings(args.project)) as engine:
        listens = engine.settings.api if args.api else engine.settings.web
        host = args.host or listens.host
        port = listens.port if args.port is None else args.port
        sock = socket.socket(fileno=args.fd) if args.fd is not None else None
        run = serve_api if args.api else serve
        run(engine, host, port, log_level=args.log_level, sock=sock)


if __name__ == "__main__":
    main()
