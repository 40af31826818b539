"""The ``sendgrid`` backend: SendGrid's v3 Mail Send API (``POST /v3/mail/send``).

One request per message: a Mail Send request shares its content among its
personalizations, and every tailormail message has its own. SendGrid answers 202 with
the message id in the ``X-Message-Id`` header; its events carry it as ``sg_message_id``
and our send id as the custom argument ``tailormail_send_id``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any, ClassVar

from engine import hookimpl
from engine.types import Message, SendResult, SendStatus
from plugins.delivery.httpapi import (
    HTTPBackend,
    HTTPOptions,
    Outgoing,
    checked_headers,
    secret_from,
)
from plugins.webhooks.common import SEND_ID_FIELD, send_id_for

if TYPE_CHECKING:
    import httpx


class SendGridOptions(HTTPOptions):
    """``[delivery.sendgrid]``: the API key by environment variable, never in the file."""

    api_key_env: str = "SENDGRID_API_KEY"
    base_url: str = "https://api.sendgrid.com"
    sandbox_mode: bool = False  # SendGrid validates the request and sends nothing


def _address(value: str) -> dict[str, str]:
    name, email = parseaddr(value)
    if not email:
        raise ValueError(f"not an email address: {value!r}")
    return {"email": email, "name": name} if name else {"email": email}


class SendGridBackend(HTTPBackend):
    """Sends each message with one v3 Mail Send request (Bearer API key)."""

    name = "sendgrid"
    Options: ClassVar[type[HTTPOptions]] = SendGridOptions
    options: SendGridOptions

    def __init__(self, engine: Any = None, **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        self.api_key = secret_from(self.name, "api_key_env", self.options.api_key_env)
        self.url = self.options.base_url.rstrip("/") + "/v3/mail/send"

    def payload(self, message: Message) -> dict[str, Any]:
        """The Mail Send body for one message."""
        headers = checked_headers(message)
        body: dict[str, Any] = {
            "personalizations": [
                {
                    "to": [_address(message.to_address)],
                    "custom_args": {SEND_ID_FIELD: send_id_for(message)},
                }
            ],
            "from": _address(message.from_address),
            "subject": message.subject,
            # SendGrid requires text/plain before text/html.
            "content": [
                {"type": "text/plain", "value": message.text},
                {"type": "text/html", "value": message.html},
            ],
        }
        if headers:
            body["headers"] = headers
        if self.options.sandbox_mode:
            body["mail_settings"] = {"sandbox_mode": {"enable": True}}
        return body

    def build_request(self, client: httpx.Client, outgoing: Sequence[Outgoing]) -> httpx.Request:
        """``POST /v3/mail/send`` with the Bearer key and the JSON body."""
        (item,) = outgoing
        return client.build_request(
            "POST",
            self.url,
            json=item.payload,
            headers={"Authorization": f"Bearer {self.api_key.get_secret_value()}"},
        )

    def read_results(
        self, outgoing: Sequence[Outgoing], response: httpx.Response
    ) -> list[SendResult]:
        """202 Accepted; the id is the ``X-Message-Id`` header."""
        (item,) = outgoing
        provider_id = response.headers.get("X-Message-Id")
        return [SendResult(item.message.send_id, SendStatus.SENT, provider_id=provider_id)]


@hookimpl
def register_backends(register: Callable[[str, Any], None]) -> None:
    """Register the ``sendgrid`` backend."""
    register("sendgrid", SendGridBackend)
