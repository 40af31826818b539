"""A small typed client of tailormail's HTTP API, on httpx (docs/api.md).

    from engine.client import Client

    with Client("http://127.0.0.1:8026", "tm_...") as api:
        alert = api.trigger("pricedrop", "u42", data={"title": "Lamp", "price": "9.99"})
        print(alert.variant, alert.probability, api.get(alert.trigger_id).status)

Every call that sends carries an ``Idempotency-Key`` (yours, or a fresh one per call), so
the client retries it safely on a dropped connection, a 429 (after ``Retry-After``) or a
5xx: the server answers a repeat with its first answer. A refusal raises ``ApiError``
with the server's stable ``code``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

RETRIED = frozenset({429, 500, 502, 503, 504})


class ApiError(Exception):
    """The API refused: its HTTP ``status``, stable ``code`` and sentence (and, in a
    batch, the ``index`` of the trigger at fault)."""

    def __init__(self, status: int, code: str, message: str, index: int | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.index = index


@dataclass(frozen=True)
class Event:
    """Something that happened to a sent alert."""

    type: str
    at: datetime


@dataclass(frozen=True)
class Trigger:
    """A trigger's decision, and its outcome when read back (``Client.get``)."""

    trigger_id: str
    decision_id: str
    campaign: str
    recipient_id: str
    status: str
    variant: str | None
    probability: float | None
    model_version: str | None
    items: list[str]
    send_at: datetime
    event_id: str | None = None
    reason: str | None = None
    sent_at: datetime | None = None
    events: list[Event] = field(default_factory=list)
    message: dict[str, str] | None = None  # a dry run's rendered message

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Trigger:
        """From the API's JSON answer."""
        sent_at = body.get("sent_at")
        return cls(
            trigger_id=body["trigger_id"],
            decision_id=body["decision_id"],
            campaign=body["campaign"],
            recipient_id=body["recipient_id"],
            status=body["status"],
            variant=body.get("variant"),
            probability=body.get("probability"),
            model_version=body.get("model_version"),
            items=list(body.get("items") or []),
            send_at=datetime.fromisoformat(body["send_at"]),
            event_id=body.get("event_id"),
            reason=body.get("reason"),
            sent_at=datetime.fromisoformat(sent_at) if sent_at else None,
            events=[
                Event(e["type"], datetime.fromisoformat(e["at"])) for e in body.get("events") or []
            ],
            message=body.get("message"),
        )


def trigger_body(
    recipient_id: str,
    *,
    email: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    items: Sequence[str] | None = None,
    send_at: datetime | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """One trigger as the API takes it (a batch is a list of these)."""
    recipient: dict[str, Any] = {"id": recipient_id}
    if email is not None:
        recipient["email"] = email
    if attributes:
        recipient["attributes"] = dict(attributes)
    body: dict[str, Any] = {"recipient": recipient, "data": dict(data or {})}
    if items is not None:
        body["items"] = list(items)
    if send_at is not None:
        body["send_at"] = send_at.isoformat()
    if event_id is not None:
        body["event_id"] = event_id
    return body


class Client:
    """The API at ``base_url`` with API key ``key``; use it as a context manager (or
    ``close`` it). ``retries``: how often a call is retried (with backoff) after a dropped
    connection, a 429 or a 5xx."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retries = retries
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}", "User-Agent": "tailormail-client"},
            timeout=timeout,
            transport=transport,
        )

    def trigger(
        self,
        campaign: str,
        recipient_id: str,
        *,
        idempotency_key: str | None = None,
        dry_run: bool = False,
        **fields: Any,
    ) -> Trigger:
        """Trigger one alert of ``campaign`` for ``recipient_id``; ``fields`` are
        ``trigger_body``'s (email, attributes, data, items, send_at, event_id)."""
        body = trigger_body(recipient_id, **fields) | {"dry_run": dry_run}
        answer = self._send("POST", f"/v1/campaigns/{campaign}/trigger", body, idempotency_key)
        return Trigger.from_json(answer)

    def trigger_batch(
        self,
        campaign: str,
        triggers: Sequence[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
        dry_run: bool = False,
    ) -> list[Trigger]:
        """Trigger up to 1,000 alerts (each a ``trigger_body``) at once: all or none."""
        body = {"triggers": [dict(t) for t in triggers], "dry_run": dry_run}
        answer = self._send("POST", f"/v1/campaigns/{campaign}/triggers", body, idempotency_key)
        return [Trigger.from_json(t) for t in answer["triggers"]]

    def get(self, trigger_id: str) -> Trigger:
        """A trigger's decision and outcome so far."""
        return Trigger.from_json(self._send("GET", f"/v1/triggers/{trigger_id}", None, None))

    def cancel(self, trigger_id: str) -> Trigger:
        """Cancel a trigger that is still waiting (``ApiError`` 409 once it is sending)."""
        path = f"/v1/triggers/{trigger_id}/cancel"
        return Trigger.from_json(self._send("POST", path, {}, None))

    def _send(
        self, method: str, path: str, body: Any, idempotency_key: str | None
    ) -> dict[str, Any]:
        headers = {}
        if method == "POST" and not (isinstance(body, dict) and body.get("dry_run")):
            headers["Idempotency-Key"] = idempotency_key or str(uuid.uuid4())
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(method, path, json=body, headers=headers)
            except httpx.TransportError:
                if last:
                    raise
                time.sleep(0.2 * 2**attempt)
                continue
            if response.status_code in RETRIED and not last:
                wait = response.headers.get("Retry-After", "")
                time.sleep(float(wait) if wait.isdigit() else 0.2 * 2**attempt)
                continue
            if response.is_success:
                answer: dict[str, Any] = response.json()
                return answer
            raise _refusal(response)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _refusal(response: httpx.Response) -> ApiError:
    try:
        error = response.json()["error"]
        return ApiError(response.status_code, error["code"], error["message"], error.get("index"))
    except (ValueError, KeyError, TypeError):
        return ApiError(response.status_code, "http_error", response.text[:200])
