"""Provider webhook handlers: verify every check in constant time, then parse.

A handler turns one provider request into normalized ``TrackingEvent`` objects; the web
app stores them (deduplicated by provider event id) and calls the ``tracking_event`` hook.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.types import TrackingEvent


class WebhookVerificationError(Exception):
    """The request failed a signature, token or timestamp check (answered with 403)."""


class WebhookHandler:
    """Template method: ``verify`` the raw request, then ``parse`` it into events.

    Subclasses implement both; ``handle`` is what the web app calls.
    """

    provider = "base"

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise ``WebhookVerificationError`` unless the request is authentic."""
        raise NotImplementedError

    def parse(self, headers: Mapping[str, str], body: bytes) -> list[TrackingEvent]:
        """Turn an authentic request into normalized events (send ids may be None)."""
        raise NotImplementedError

    def handle(self, headers: Mapping[str, str], body: bytes) -> list[TrackingEvent]:
        """Verify, then parse: nothing is parsed before every check has passed."""
        self.verify(headers, body)
        return self.parse(headers, body)
