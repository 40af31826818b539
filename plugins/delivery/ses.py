"""The ``ses`` backend: Amazon SES API v2 ``SendEmail`` with raw content.

``POST /v2/email/outbound-emails`` carries the MIME we build (base64 in
``Content.Raw.Data``), signed with botocore's Signature Version 4 signer (the ``ses``
extra: ``pip install 'tailormail[ses]'``). SES has no batch form for raw messages, so one
request per message. It answers ``{"MessageId": ...}``, the id its SNS events carry as
``mail.messageId``; our send id travels as the message tag ``tailormail_send_id``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from engine import hookimpl
from engine.errors import ConfigError
from engine.mime import build_mime
from engine.types import Message, SendResult, SendStatus
from plugins.delivery.httpapi import (
    HTTPBackend,
    HTTPOptions,
    Outgoing,
    describe,
    results_for,
    secret_from,
    sent_with_id,
)
from plugins.webhooks.common import SEND_ID_FIELD, send_id_for

if TYPE_CHECKING:
    import httpx

# SES error types about the account (quota, pause), not the message: try again later.
_ACCOUNT_ERRORS = frozenset(
    {"LimitExceededException", "SendingPausedException", "AccountSuspendedException"}
)


class SESOptions(HTTPOptions):
    """``[delivery.ses]``: region, optional configuration set, credentials by env variable."""

    region: str = "us-east-1"
    configuration_set: str | None = None
    # "env": the three variables below; "aws": botocore's own chain (profiles, SSO,
    # container and instance roles), refreshed as temporary credentials expire.
    credentials: Literal["env", "aws"] = "env"
    access_key_id_env: str = "AWS_ACCESS_KEY_ID"
    secret_access_key_env: str = "AWS_SECRET_ACCESS_KEY"
    session_token_env: str | None = None  # for temporary credentials (AWS_SESSION_TOKEN)
    endpoint_url: str | None = None  # default https://email.<region>.amazonaws.com


class SESBackend(HTTPBackend):
    """Sends each message with one SigV4-signed ``SendEmail`` request."""

    name = "ses"
    Options: ClassVar[type[HTTPOptions]] = SESOptions
    options: SESOptions

    def __init__(self, engine: Any = None, **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        try:
            # lazy: botocore (~0.3 s) only to sign a request with AWS credentials
            from botocore.auth import SigV4Auth
        except ImportError:
            raise ConfigError(
                "delivery.ses needs botocore to sign requests: pip install 'tailormail[ses]'"
            ) from None
        options = self.options
        self.signer = SigV4Auth(self._credentials(), "ses", options.region)
        endpoint = options.endpoint_url or f"https://email.{options.region}.amazonaws.com"
        self.url = endpoint.rstrip("/") + "/v2/email/outbound-emails"

    def _credentials(self) -> Any:
        # lazy: botocore (~0.3 s) only to sign a request with AWS credentials
        from botocore.credentials import Credentials
        from botocore.session import get_session

        options = self.options
        if options.credentials == "aws":
            found = get_session().get_credentials()
            if found is None:
                raise ConfigError("delivery.ses.credentials: botocore found no AWS credentials")
            return found
        key = secret_from(self.name, "access_key_id_env", options.access_key_id_env)
        secret = secret_from(self.name, "secret_access_key_env", options.secret_access_key_env)
        token = (
            secret_from(self.name, "session_token_env", options.session_token_env)
            if options.session_token_env
            else None
        )
        return Credentials(
            key.get_secret_value(),
            secret.get_secret_value(),
            token.get_secret_value() if token else None,
        )

    def payload(self, message: Message) -> bytes:
        """The ``SendEmail`` JSON body (``ValueError`` for a bad header)."""
        raw = build_mime(message).as_bytes()
        recipient = parseaddr(message.to_address)[1]
        sender = parseaddr(message.from_address)[1]
        if not recipient or not sender:
            raise ValueError(f"not an email address: {message.to_address!r}")
        body: dict[str, Any] = {
            "FromEmailAddress": sender,
            "Destination": {"ToAddresses": [recipient]},
            "Content": {"Raw": {"Data": base64.b64encode(raw).decode("ascii")}},
            "EmailTags": [{"Name": SEND_ID_FIELD, "Value": send_id_for(message)}],
        }
        if self.options.configuration_set:
            body["ConfigurationSetName"] = self.options.configuration_set
        return json.dumps(body).encode()

    def build_request(self, client: httpx.Client, outgoing: Sequence[Outgoing]) -> httpx.Request:
        """The request signed afresh (SigV4 signatures expire) for every attempt."""
        # lazy: botocore (~0.3 s) only to sign a request with AWS credentials
        from botocore.awsrequest import AWSRequest

        (item,) = outgoing
        signed = AWSRequest(
            method="POST",
            url=self.url,
            data=item.payload,
            headers={"Content-Type": "application/json"},
        )
        self.signer.add_auth(signed)
        return client.build_request(
            "POST", self.url, content=item.payload, headers=dict(signed.headers.items())
        )

    def read_results(
        self, outgoing: Sequence[Outgoing], response: httpx.Response
    ) -> list[SendResult]:
        """``{"MessageId": "..."}``."""
        return sent_with_id(outgoing, response, "MessageId")

    def refused(self, outgoing: Sequence[Outgoing], response: httpx.Response) -> list[SendResult]:
        """Quota and paused-account errors are temporary; the rest fail the message."""
        kind = response.headers.get("x-amzn-ErrorType", "").split(":")[0]
        if kind in _ACCOUNT_ERRORS:
            return results_for(outgoing, SendStatus.TEMPORARY_FAILURE, describe(response))
        return super().refused(outgoing, response)


@hookimpl
def register_backends(register: Callable[[str, Any], None]) -> None:
    """Register the ``ses`` backend."""
    register("ses", SESBackend)
