"""How fast each delivery backend hands messages over, against local servers.

Messages per second to an aiosmtpd server with 1, 4 and 16 connections (the ``smtp``
backend's ``pool_size``), to the outbox folder, and to each HTTP provider backend against
a local stub that answers like the provider (uvicorn + starlette on 127.0.0.1). The
servers run in their own processes, so they do not share the sender's interpreter lock.
Ratios are against ``smtp.1`` measured in the same run, because these machines are noisy.

    python bench/delivery.py --messages 2000 --json delivery.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.types import DeliveryBackend, Message, SendStatus  # noqa: E402
from plugins.delivery.http_json import HTTPJSONBackend  # noqa: E402
from plugins.delivery.mailgun import MailgunBackend  # noqa: E402
from plugins.delivery.outbox import OutboxBackend  # noqa: E402
from plugins.delivery.postmark import PostmarkBackend  # noqa: E402
from plugins.delivery.sendgrid import SendGridBackend  # noqa: E402
from plugins.delivery.ses import SESBackend  # noqa: E402
from plugins.delivery.smtp import SMTPBackend  # noqa: E402

BATCH = 100  # what the pipeline hands a backend at a time (delivery.batch_size)
SMTP_CONNECTIONS = (1, 4, 16)
KEY_ENV = "TAILORMAIL_BENCH_PROVIDER_KEY"  # a dummy key: the stub checks nothing


def make_messages(count: int) -> list[Message]:
    """``count`` alert-sized messages (about 4 KB of HTML each)."""
    rows = "".join(
        f'<tr><td><a href="https://t.example/c/{i:04d}">Listing {i}</a></td><td>{i} EUR</td></tr>'
        for i in range(40)
    )
    return [
        Message(
            send_id=i,
            message_id=f"{i}.bench@tailormail.example",
            from_address="Alerts <alerts@example.org>",
            to_address=f"user{i}@example.com",
            subject=f"User {i}, 40 new listings for you",
            html=f"<html><body><h1>Hello user {i}</h1><table>{rows}</table></body></html>",
            text=f"Hello user {i}, 40 new listings.",
            headers={
                "List-Unsubscribe": f"<https://t.example/u/{i}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        )
        for i in range(1, count + 1)
    ]


def measure(backend: DeliveryBackend, messages: list[Message]) -> float:
    """Messages per second through ``backend``, ``BATCH`` at a time; every one must be sent."""
    start = time.perf_counter()
    with backend:
        for offset in range(0, len(messages), BATCH):
            results = backend.send(messages[offset : offset + BATCH])
            failed = [r for r in results if r.status != SendStatus.SENT]
            if failed:
                raise SystemExit(f"{backend.name}: {len(failed)} not sent, first: {failed[0]}")
    return len(messages) / (time.perf_counter() - start)


# -- the local servers, each in its own process --------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def server(kind: str) -> Iterator[int]:
    """Run ``--serve kind PORT`` in a child process until the block ends; yields the port."""
    port = free_port()
    child = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(port)])
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if child.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the {kind} server did not start")
            time.sleep(0.05)
        yield port
    finally:
        child.terminate()
        child.wait(10)


def serve_smtp(port: int) -> None:
    """An aiosmtpd server that accepts and discards every message."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)


def provider_stub() -> Any:
    """A starlette app answering each provider's send endpoint as its docs show."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    def new_id() -> str:
        return uuid.uuid4().hex

    async def ses(request: Request) -> Response:
        await request.body()
        return JSONResponse({"MessageId": new_id()})

    async def sendgrid(request: Request) -> Response:
        await request.body()
        return Response(status_code=202, headers={"X-Message-Id": new_id()})

    async def postmark(request: Request) -> Response:
        sent = json.loads(await request.body())
        answers = [
            {"ErrorCode": 0, "Message": "OK", "MessageID": new_id(), "To": m["To"]}
            for m in (sent if isinstance(sent, list) else [sent])
        ]
        return JSONResponse(answers if isinstance(sent, list) else answers[0])

    async def mailgun(request: Request) -> Response:
        if b'name="message"' not in await request.body():  # the MIME upload is missing
            return JSONResponse({"message": "'message' parameter is missing"}, status_code=400)
        return JSONResponse({"id": f"<{new_id()}@bench.example>", "message": "Queued."})

    async def relay(request: Request) -> Response:
        sent = json.loads(await request.body())["messages"]
        return JSONResponse({"results": [{"id": new_id(), "status": "sent"} for _ in sent]})

    return Starlette(
        routes=[
            Route("/v2/email/outbound-emails", ses, methods=["POST"]),
            Route("/v3/mail/send", sendgrid, methods=["POST"]),
            Route("/email", postmark, methods=["POST"]),
            Route("/email/batch", postmark, methods=["POST"]),
            Route("/v3/{domain}/messages.mime", mailgun, methods=["POST"]),
            Route("/relay", relay, methods=["POST"]),
        ]
    )


def serve_http(port: int) -> None:
    """The provider stub under uvicorn."""
    import uvicorn

    uvicorn.run(provider_stub(), host="127.0.0.1", port=port, log_level="warning")


def http_backends(base: str) -> dict[str, Callable[[], DeliveryBackend]]:
    """Each provider backend pointed at the stub at ``base``."""
    os.environ.setdefault(KEY_ENV, "bench-key")
    return {
        "http.ses": lambda: SESBackend(
            None,
            endpoint_url=base,
            access_key_id_env=KEY_ENV,
            secret_access_key_env=KEY_ENV,
        ),
        "http.sendgrid": lambda: SendGridBackend(None, base_url=base, api_key_env=KEY_ENV),
        "http.postmark": lambda: PostmarkBackend(None, base_url=base, server_token_env=KEY_ENV),
        "http.mailgun": lambda: MailgunBackend(
            None, base_url=base, domain="bench.example", api_key_env=KEY_ENV
        ),
        "http.http_json": lambda: HTTPJSONBackend(None, url=f"{base}/relay"),
    }


# -- the run --------------------------------------------------------------------------------


def run(count: int) -> dict[str, float]:
    """Messages per second for every key, in the order of the table."""
    messages = make_messages(count)
    figures: dict[str, float] = {}
    with server("smtp") as port:
        for connections in SMTP_CONNECTIONS:
            backend = SMTPBackend(None, host="127.0.0.1", port=port, pool_size=connections)
            figures[f"smtp.{connections}"] = measure(backend, messages)
    with tempfile.TemporaryDirectory() as folder:
        figures["outbox"] = measure(OutboxBackend(None, path=folder), messages)
    with server("http") as port:
        for key, factory in http_backends(f"http://127.0.0.1:{port}").items():
            figures[key] = measure(factory(), messages)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per backend")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, port = args.serve
        (serve_smtp if kind == "smtp" else serve_http)(int(port))
        return
    figures = run(args.messages)
    baseline = figures["smtp.1"]
    load = os.getloadavg()
    title = f"delivery throughput, {args.messages} messages per backend (load {load[0]:.2f})"
    table = Table(title=title)
    table.add_column("backend")
    table.add_column("messages/s", justify="right")
    table.add_column("ratio to smtp.1", justify="right")
    for key, rate in figures.items():
        table.add_row(key, f"{rate:,.0f}", f"{rate / baseline:.2f}")
    Console().print(table)
    if args.json:
        result: dict[str, Any] = dict(figures)
        result["ratio_to_smtp.1"] = {key: rate / baseline for key, rate in figures.items()}
        result["messages"] = args.messages
        result["load_1min"] = load[0]
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
