"""The ``mailgun`` backend: Mailgun's ``POST /v3/<domain>/messages.mime``.

The message goes as the MIME we build (List-Unsubscribe and Message-ID included), one
request per message: Mailgun's batch sending shares one body among its recipients, and
every tailormail message has its own. Mailgun answers ``{"id": "<...>", "message":
"Queued. Thank you."}``; the id is the Message-ID its events carry, and our send's keyed reference
travels as the user variable ``v:tailormail_send_id`` (Mailgun shows it to recipients).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any, ClassVar

from engine import hookimpl
from engine.mime import build_mime
from engine.types import Message, SendResult
from plugins.delivery.httpapi import HTTPBackend, HTTPOptions, Outgoing, secret_from, sent_with_id
from plugins.webhooks.common import SEND_ID_FIELD, send_id_for

if TYPE_CHECKING:
    import httpx


class MailgunOptions(HTTPOptions):
    """``[delivery.mailgun]``: the sending domain, the region's API and the key's variable."""

    domain: str
    api_key_env: str = "MAILGUN_API_KEY"
    base_url: str = "https://api.mailgun.net"  # https://api.eu.mailgun.net for EU domains


class MailgunBackend(HTTPBackend):
    """Sends each message's MIME to ``messages.mime`` with basic auth ``api:<key>``."""

    name = "mailgun"
    Options: ClassVar[type[HTTPOptions]] = MailgunOptions
    options: MailgunOptions

    def __init__(self, engine: Any = None, **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        self.api_key = secret_from(self.name, "api_key_env", self.options.api_key_env)
        base = self.options.base_url.rstrip("/")
        self.url = f"{base}/v3/{self.options.domain}/messages.mime"

    def payload(self, message: Message) -> tuple[dict[str, str], bytes]:
        """The form fields and the MIME message (``ValueError`` for a bad header)."""
        mime = build_mime(message).as_bytes()
        recipient = parseaddr(message.to_address)[1]
        if not recipient:
            raise ValueError(f"not an email address: {message.to_address!r}")
        return {"to": recipient, f"v:{SEND_ID_FIELD}": send_id_for(message)}, mime

    def build_request(self, client: httpx.Client, outgoing: Sequence[Outgoing]) -> httpx.Request:
        """multipart/form-data: ``to``, the variable, and ``message`` as a file upload."""
        (item,) = outgoing
        fields, mime = item.payload
        credentials = f"api:{self.api_key.get_secret_value()}".encode()
        return client.build_request(
            "POST",
            self.url,
            data=fields,
            files={"message": ("message.mime", mime, "message/rfc822")},
            headers={"Authorization": "Basic " + base64.b64encode(credentials).decode("ascii")},
        )

    def read_results(
        self, outgoing: Sequence[Outgoing], response: httpx.Response
    ) -> list[SendResult]:
        """``{"id": "<message id>", "message": "Queued. Thank you."}``."""
        return sent_with_id(outgoing, response, "id")


@hookimpl
def register_backends(register: Callable[[str, Any], None]) -> None:
    """Register the ``mailgun`` backend."""
    register("mailgun", MailgunBackend)
