"""The webhook framework, for any handler (issue 5 item 17): whatever a handler cannot read
is a 400, a signed timestamp outside the tolerance is a 400 while the event's own time
does not matter, and events without a provider id are deduplicated on their content."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from engine import EventType, TrackingEvent
from engine.feedback.webhooks import (
    StaleWebhookError,
    WebhookHandler,
    WebhookPayloadError,
    dedupe_keys,
    from_epoch,
    json_body,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Careless(WebhookHandler):
    """A handler written without a thought for bad input: indexes, casts, recursion."""

    provider = "careless"

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        pass

    def signed_timestamp(self, headers: Mapping[str, str], body: bytes) -> datetime | None:
        signed = headers.get("x-signed-at")
        return None if signed is None else from_epoch(signed)

    def parse(self, headers: Mapping[str, str], body: bytes) -> list[TrackingEvent]:
        payload = json_body(body)
        return [
            TrackingEvent(
                EventType(record["event"]),
                int(record["send"]),
                datetime.fromtimestamp(record["at"], UTC),
                url=record.get("url"),
            )
            for record in payload["events"]
        ]


@pytest.mark.parametrize(
    "body",
    [
        b"[]",  # a list where an object belongs
        b'{"events": {"event": "click"}}',  # an object where a list belongs
        b'{"events": [{"event": "clicked", "send": 1, "at": 0}]}',  # unknown event type
        b'{"events": [{"event": "click", "send": "x", "at": 0}]}',  # wrong type
        b'{"events": [{"event": "click", "send": 1, "at": 1e300}]}',  # a huge number
        b'{"events": [{"event": "click", "send": 1, "at": 99999999999999999999}]}',
        b'{"events": [{"event": "click", "send": 1}]}',  # a missing key
        b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # nested too deep
        b"\xff\xfe not even text",
    ],
)
def test_anything_a_handler_cannot_read_is_a_400(body: bytes) -> None:
    with pytest.raises(WebhookPayloadError) as caught:
        Careless().handle({}, body, now=NOW)
    assert caught.value.status == 400


def test_the_signed_timestamp_is_checked_and_the_events_own_time_is_not() -> None:
    handler = Careless()
    week_old = (NOW - timedelta(days=7)).timestamp()  # a bounce retried a week later
    body = json.dumps({"events": [{"event": "bounce", "send": 1, "at": week_old}]}).encode()
    for skew in (timedelta(minutes=-4), timedelta(0), timedelta(minutes=4, seconds=59)):
        signed = {"x-signed-at": str((NOW + skew).timestamp())}
        assert len(handler.handle(signed, body, now=NOW)) == 1
    for skew in (timedelta(minutes=-6), timedelta(minutes=6)):
        signed = {"x-signed-at": str((NOW + skew).timestamp())}
        with pytest.raises(StaleWebhookError, match="outside the 300 s tolerance") as caught:
            handler.handle(signed, body, now=NOW)
        assert caught.value.status == 400
    with pytest.raises(WebhookPayloadError):  # an unreadable signed time is a 400 too
        handler.handle({"x-signed-at": "yesterday"}, body, now=NOW)


def test_events_without_a_provider_id_are_deduplicated_on_their_content() -> None:
    first = TrackingEvent(EventType.CLICK, 7, NOW, url="https://a.example/x")
    same = TrackingEvent(EventType.CLICK, 7, NOW, url="https://a.example/x")
    other = TrackingEvent(EventType.CLICK, 7, NOW, url="https://a.example/y")
    assert dedupe_keys("careless", first) == dedupe_keys("careless", same)
    assert dedupe_keys("careless", first)[0] != dedupe_keys("careless", other)[0]
    assert dedupe_keys("careless", first)[0].startswith("careless:sha256:")
    with_id = TrackingEvent(EventType.CLICK, 7, NOW, provider_event_id="ev-1")
    key, also = dedupe_keys("careless", with_id)
    assert key == "careless:ev-1" and also[0].startswith("careless:sha256:")
