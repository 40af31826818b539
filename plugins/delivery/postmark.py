"""The ``postmark`` backend: Postmark's Email API (``POST /email`` and ``/email/batch``).

Messages go ``batch_size`` to a request to ``/email/batch`` (Postmark takes up to 500; the
default is small because every message of a request in flight is at stake if the process
dies before the answer). Postmark answers each message in order with an ``ErrorCode``
(0 is success) and a ``MessageID``, which its webhooks echo; our send id travels as the
``tailormail_send_id`` metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from engine import hookimpl
from engine.types import Message, SendResult, SendStatus
from plugins.delivery.httpapi import (
    HTTPBackend,
    HTTPOptions,
    Outgoing,
    checked_headers,
    results_for,
    secret_from,
)
from plugins.webhooks.common import SEND_ID_FIELD, send_id_for

if TYPE_CHECKING:
    import httpx

# Postmark's ErrorCode 406: the recipient hard-bounced, complained or unsubscribed before.
_INACTIVE_RECIPIENT = 406
# ErrorCodes about the account or the server, not the message: worth sending again later.
_ACCOUNT_CODES = frozenset({10, 100, 405, 412, 413, 429})


class PostmarkOptions(HTTPOptions):
    """``[delivery.postmark]``: the server token by environment variable."""

    server_token_env: str = "POSTMARK_SERVER_TOKEN"
    base_url: str = "https://api.postmarkapp.com"
    message_stream: str = "outbound"  # "broadcast" (or your own stream) for bulk mail
    batch_size: int = Field(default=10, ge=1, le=500)


class PostmarkBackend(HTTPBackend):
    """Sends through ``/email`` (one message) or ``/email/batch`` (several)."""

    name = "postmark"
    Options: ClassVar[type[HTTPOptions]] = PostmarkOptions
    options: PostmarkOptions

    def __init__(self, engine: Any = None, **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        self.token = secret_from(self.name, "server_token_env", self.options.server_token_env)
        self.base_url = self.options.base_url.rstrip("/")

    @property
    def batch_limit(self) -> int:
        """``batch_size`` messages per ``/email/batch`` request."""
        return self.options.batch_size

    def payload(self, message: Message) -> dict[str, Any]:
        """One message in Postmark's JSON form."""
        headers = checked_headers(message)
        body: dict[str, Any] = {
            "From": message.from_address,
            "To": message.to_address,
            "Subject": message.subject,
            "HtmlBody": message.html,
            "TextBody": message.text,
            "MessageStream": self.options.message_stream,
            "Metadata": {SEND_ID_FIELD: send_id_for(message)},
        }
        if headers:
            body["Headers"] = [{"Name": name, "Value": value} for name, value in headers.items()]
        return body

    def build_request(self, client: httpx.Client, outgoing: Sequence[Outgoing]) -> httpx.Request:
        """One message to ``/email``, several to ``/email/batch`` (a JSON array)."""
        single = len(outgoing) == 1
        return client.build_request(
            "POST",
            f"{self.base_url}/email" if single else f"{self.base_url}/email/batch",
            json=outgoing[0].payload if single else [item.payload for item in outgoing],
            headers={
                "Accept": "application/json",
                "X-Postmark-Server-Token": self.token.get_secret_value(),
            },
        )

    def read_results(
        self, outgoing: Sequence[Outgoing], response: httpx.Response
    ) -> list[SendResult]:
        """Each message's ``ErrorCode`` and ``MessageID``, in the order sent."""
        try:
            answer = response.json()
        except ValueError:
            return results_for(
                outgoing, SendStatus.UNKNOWN, f"unreadable answer: {response.text!r}"
            )
        answers = [answer] if isinstance(answer, dict) else answer
        if not isinstance(answers, list) or len(answers) != len(outgoing):
            return results_for(outgoing, SendStatus.UNKNOWN, f"unexpected answer: {answer!r}")
        return [_result(item.message, each) for item, each in zip(outgoing, answers, strict=True)]

    def refused(self, outgoing: Sequence[Outgoing], response: httpx.Response) -> list[SendResult]:
        """A 422 names the problem by ``ErrorCode``; other 4xx fail every message."""
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if len(outgoing) == 1 and isinstance(answer, dict) and "ErrorCode" in answer:
            return [_result(outgoing[0].message, answer)]
        return super().refused(outgoing, response)


def _result(message: Message, answer: Any) -> SendResult:
    if not isinstance(answer, dict):
        return SendResult(message.send_id, SendStatus.UNKNOWN, error=f"unexpected {answer!r}")
    code = answer.get("ErrorCode")
    if code == 0:
        provider_id = answer.get("MessageID")
        return SendResult(
            message.send_id, SendStatus.SENT, provider_id=str(provider_id) if provider_id else None
        )
    error = f"Postmark ErrorCode {code}: {answer.get('Message', '')}"
    if code in _ACCOUNT_CODES:
        return SendResult(message.send_id, SendStatus.TEMPORARY_FAILURE, error=error)
    return SendResult(
        message.send_id,
        SendStatus.PERMANENT_FAILURE,
        error=error,
        rejected=code == _INACTIVE_RECIPIENT,
    )


@hookimpl
def register_backends(register: Callable[[str, Any], None]) -> None:
    """Register the ``postmark`` backend."""
    register("postmark", PostmarkBackend)
