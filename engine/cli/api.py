"""``tailormail api``: serve the HTTP API for triggered alerts on its own port (docs/api.md)."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from engine.cli.listening import listen
from engine.cli.support import ProjectOption, console, open_engine

if TYPE_CHECKING:
    from engine.app import Engine


def api(
    host: Annotated[str | None, typer.Option(help="Interface to listen on ([api] host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on ([api] port).")] = None,
    project: ProjectOption = None,
) -> None:
    """Serve the HTTP API (trigger alerts, read their outcomes) and send triggered alerts
    as they come due. Keys come from `tailormail keys create`."""
    # lazy: this command's own modules, imported when it runs (not for every command)
    from engine.cli.listening import stopped_by_signal
    from engine.web.server import serve_api

    with open_engine(project) as engine:
        settings = engine.settings.api
        host = host or settings.host
        port = settings.port if port is None else port
        sock = listen(host, port, table="api")  # a port in use stops here
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        console.print(f"API on http://{host}:{port}/v1 (its document: /v1/openapi.json)")
        try:
            with stopped_by_signal():
                serve_api(engine, host, port, log_level="info", sock=sock)
        finally:
            sock.close()
    console.print("stopped: the API and its releaser")


class ApiProcess:
    """The API served by a child process (``python -m engine.web --api``) on a socket
    this process opened: ``serve`` runs it beside the tracking server, each with its own
    event loop and GIL."""

    def __init__(self, engine: Engine) -> None:
        settings = engine.settings.api
        self.url = f"http://{settings.host}:{settings.port}/v1"
        self.sock = listen(settings.host, settings.port, table="api")  # in use: stops here
        fd = self.sock.fileno()
        command = [sys.executable, "-m", "engine.web", "--api", "--fd", str(fd)]
        command += ["-p", str(engine.settings.project_dir)]
        self.child = subprocess.Popen(command, pass_fds=[fd])

    def stop(self) -> None:
        """SIGTERM the child (its releaser settles what it holds) and wait for it."""
        if self.child.poll() is None:
            self.child.terminate()
            try:
                self.child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()
        self.sock.close()


def start_api_process(engine: Engine) -> ApiProcess | None:
    """Start the API beside ``serve`` when ``[api] mode`` is ``own_port`` and a campaign
    is triggered (``same_port``: the tracking app serves it; ``off``: nobody does)."""
    if engine.settings.api.mode != "own_port":
        return None
    if not any(campaign.triggered for campaign in engine.campaigns.values()):
        return None
    process = ApiProcess(engine)
    console.print(f"API on {process.url} (its own process; `tailormail keys create` for a key)")
    return process
