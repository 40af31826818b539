"""The API's OpenAPI 3.1 document, built from the models that validate its requests
(``engine.web.api_schema``), served at ``/v1/openapi.json`` and checked in as
``docs/openapi.json`` (a test keeps the two equal: ``python -m engine.web.api_openapi``
writes it)."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from engine.web.api_schema import (
    BatchIn,
    BatchOut,
    DeadLettersOut,
    ErrorOut,
    SubscriptionIn,
    SubscriptionOut,
    SubscriptionsOut,
    TriggerOut,
    TriggerRequestIn,
)

VERSION = "1.0.0"
CHECKED_IN = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
    }


def _answer(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


_AUTH = {
    "401": _error("No API key, or not a valid one."),
    "403": _error("The key lacks the scope, or may not act on this campaign."),
    "429": {
        **_error("The key is over its rate."),
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}
_BODY = {
    "400": _error("The body is not JSON, or a header is malformed."),
    "408": _error("The body did not arrive in time."),
    "413": _error("The body is too large."),
    "422": _error("The body is not a valid request, or cannot be rendered."),
    "503": _error("Too many bodies at once; retry."),
}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Makes a repeat of this request return its first answer (kept for [api] "
        "idempotency_retention). Another body with the same key is 422; a repeat while "
        "the first is being answered is 409."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
_CAMPAIGN = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"},
}
_TRIGGER_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


def _trigger_operation(body: str, answer: str, summary: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": [{"apiKey": []}],
        "parameters": [_CAMPAIGN, _IDEMPOTENCY_KEY],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        },
        "responses": {
            "202": _answer(answer, "Accepted: committed, decided, and queued or scheduled."),
            "200": _answer(answer, "A dry run: decided and rendered, nothing stored."),
            **_AUTH,
            **_BODY,
            "404": _error("No such campaign."),
            "409": _error(
                "The campaign is not triggered, or this Idempotency-Key's first request "
                "is still being answered."
            ),
        },
    }


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The document (built once per process)."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (TriggerRequestIn, "validation"),
        (BatchIn, "validation"),
        (TriggerOut, "serialization"),
        (BatchOut, "serialization"),
        (ErrorOut, "serialization"),
        (SubscriptionIn, "validation"),
        (SubscriptionOut, "serialization"),
        (SubscriptionsOut, "serialization"),
        (DeadLettersOut, "serialization"),
    ]
    _, schemas = models_json_schema(models, ref_template="#/components/schemas/{model}")
    read: dict[str, Any] = {
        "security": [{"apiKey": []}],
        "parameters": [_TRIGGER_ID],
        "responses": {
            "200": _answer("TriggerOut", "The trigger's decision and outcome."),
            **_AUTH,
            "404": _error("No such trigger (or not one this key may see)."),
        },
    }
    cancel = {
        **read,
        "summary": "Cancel a trigger still waiting (queued or scheduled).",
        "responses": {
            **read["responses"],
            "200": _answer("TriggerOut", "Cancelled (or it was already)."),
            "409": _error("It is being sent, or was sent."),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tailormail API",
            "version": VERSION,
            "description": "Triggered alerts: the application says what happened; tailormail "
            "decides, renders, sends once and reports back. See docs/api.md.",
        },
        "paths": {
            "/v1/campaigns/{name}/trigger": {
                "post": _trigger_operation("TriggerRequestIn", "TriggerOut", "Trigger one alert.")
            },
            "/v1/campaigns/{name}/triggers": {
                "post": _trigger_operation(
                    "BatchIn", "BatchOut", "Trigger up to 1,000 alerts (all or none)."
                )
            },
            "/v1/triggers/{id}": {"get": {**read, "summary": "A trigger's decision and outcome."}},
            "/v1/triggers/{id}/cancel": {"post": cancel},
            "/v1/subscriptions": {
                "post": {
                    "summary": "Subscribe a URL to the outcomes of this key's triggers.",
                    "security": [{"apiKey": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/SubscriptionIn"}
                            }
                        },
                    },
                    "responses": {
                        "201": _answer("SubscriptionOut", "Subscribed; the secret is shown once."),
                        **_AUTH,
                        **_BODY,
                    },
                },
                "get": {
                    "summary": "This key's subscriptions.",
                    "security": [{"apiKey": []}],
                    "responses": {"200": _answer("SubscriptionsOut", "They."), **_AUTH},
                },
            },
            "/v1/subscriptions/{id}": {
                "delete": {
                    "summary": "Remove a subscription.",
                    "security": [{"apiKey": []}],
                    "parameters": [_TRIGGER_ID],
                    "responses": {
                        "204": {"description": "Removed."},
                        **_AUTH,
                        "404": _error("No such subscription of this key."),
                    },
                }
            },
            "/v1/dead-letters": {
                "get": {
                    "summary": "This key's status webhooks whose every attempt failed.",
                    "security": [{"apiKey": []}],
                    "responses": {"200": _answer("DeadLettersOut", "They."), **_AUTH},
                }
            },
            "/v1/dead-letters/{id}/replay": {
                "post": {
                    "summary": "Post a dead letter again, from its first attempt.",
                    "security": [{"apiKey": []}],
                    "parameters": [_TRIGGER_ID],
                    "responses": {
                        "200": {
                            "description": "Queued again.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **_AUTH,
                        "404": _error("No such dead letter of this key."),
                        "409": _error("Its subscription was removed."),
                    },
                }
            },
            "/v1/health": {
                "get": {
                    "summary": "The API answers.",
                    "responses": {"200": {"description": "It does."}},
                }
            },
        },
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key from `tailormail keys create`.",
                }
            },
        },
    }


def render() -> str:
    """The document as checked in."""
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover - a maintainer's command
    CHECKED_IN.write_text(render())
    sys.stdout.write(f"wrote {CHECKED_IN}\n")
