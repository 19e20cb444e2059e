"""The request bodies of the live endpoints as the OpenAPI document describes them."""

from __future__ import annotations

from typing import Any

_TEXT = {"type": ["string", "null"], "maxLength": 1000}
_ARTICLE_FIELDS = {
    "title": _TEXT,
    "category": _TEXT,
    "region": _TEXT,
    "status": {"type": "string", "enum": ["active", "sold", "deleted"], "default": "active"},
    "created_at": {"type": ["string", "null"], "format": "date-time"},
}
_VIEW: dict[str, Any] = {
    "type": "object",
    "required": ["user_id", "article_id", "viewed_at"],
    "properties": {
        "type": {"type": "string", "enum": ["view"], "default": "view"},
        "user_id": {"type": "string", "pattern": r"^[A-Za-z0-9._:@-]{1,128}$"},
        "article_id": {"type": "string", "minLength": 1, "maxLength": 256},
        "viewed_at": {"type": "string", "format": "date-time", "description": "RFC 3339 with offset"},
        "event_id": {
            "type": "string",
            "maxLength": 256,
            "description": "idempotency key (default: viewed_at|article_id)",
        },
    },
}
_SEARCH = {  # serving/live/searches.py
    "type": "object",
    "required": ["type", "user_id", "query", "searched_at"],
    "properties": {
        "type": {"type": "string", "enum": ["search"]},
        "user_id": _VIEW["properties"]["user_id"],
        "query": {"type": "string", "minLength": 1, "description": "not blank; cut to 512 characters"},
        "searched_at": {"type": "string", "format": "date-time", "description": "RFC 3339 with offset"},
        "event_id": {"type": "string", "maxLength": 256, "description": "idempotency key (default: searched_at|query)"},
    },
}


def _body_doc(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


EVENTS_DOC = _body_doc(
    {
        "type": "object",
        "required": ["events"],
        "properties": {"events": {"type": "array", "maxItems": 1000, "items": {"oneOf": [_VIEW, _SEARCH]}}},
    }
)
ARTICLE_DOC = _body_doc({"type": "object", "properties": _ARTICLE_FIELDS})
ARTICLES_DOC = _body_doc(
    {
        "type": "object",
        "required": ["articles"],
        "properties": {
            "articles": {
                "type": "array",
                "maxItems": 1000,
                "items": {
                    "type": "object",
                    "required": ["article_id"],
                    "properties": {
                        "article_id": {"type": "string", "minLength": 1, "maxLength": 256},
                        **_ARTICLE_FIELDS,
                    },
                },
            }
        },
    }
)
