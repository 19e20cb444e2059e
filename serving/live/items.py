"""Checks every live item shares (views, searches): user ids, event ids, RFC 3339 timestamps.

Each raises ValueError whose message is the per-item reason the write endpoints return.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

ID_PATTERN = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")  # the same ids the candidates URL takes
MAX_EVENT_ID_LENGTH = 256
FUTURE_TOLERANCE_S = 300  # clocks disagree a little; a view from further in the future is refused


def parse_timestamp(value: Any, field: str = "viewed_at") -> int:
    """An RFC 3339 timestamp with offset (`2024-06-01T12:00:00Z`, `...+02:00`) as ms since the epoch.

    Raises:
      ValueError: not a string, not RFC 3339, or without a time zone offset.
    """
    if not isinstance(value, str):
        raise ValueError(f"{field} must be an RFC 3339 string such as 2024-06-01T12:00:00Z, got {type(value).__name__}")
    text = value.strip()
    if "T" not in text.upper() or len(text) > 40:
        raise ValueError(f"{field} {value!r} is not an RFC 3339 timestamp (e.g. 2024-06-01T12:00:00Z)")
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" else text)
    except ValueError:
        raise ValueError(f"{field} {value!r} is not an RFC 3339 timestamp (e.g. 2024-06-01T12:00:00Z)") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{field} {value!r} has no time zone offset; RFC 3339 needs one (Z or +hh:mm)")
    return int(parsed.timestamp() * 1000)


def format_timestamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def checked_user_id(item: Mapping[str, Any]) -> str:
    """The item's `user_id`, or ValueError with the rule (every event type)."""
    user_id = item.get("user_id")
    if not isinstance(user_id, str) or not ID_PATTERN.fullmatch(user_id):
        raise ValueError(f"user_id must be 1-128 characters of A-Z a-z 0-9 . _ : @ -, got {user_id!r}"[:300])
    return user_id


def checked_time_ms(item: Mapping[str, Any], field: str, now_s: float) -> int:
    """The item's RFC 3339 `field` in ms since the epoch, refused when in the future (beyond the tolerance)."""
    ms = parse_timestamp(item.get(field), field)
    if ms > (now_s + FUTURE_TOLERANCE_S) * 1000:
        raise ValueError(f"{field} {item.get(field)!r} is in the future")
    return ms


def checked_event_id(item: Mapping[str, Any]) -> str | None:
    """The item's optional idempotency key `event_id`."""
    event_id = item.get("event_id")
    if event_id is not None and (not isinstance(event_id, str) or not event_id or len(event_id) > MAX_EVENT_ID_LENGTH):
        raise ValueError(f"event_id must be a non-empty string of at most {MAX_EVENT_ID_LENGTH} characters")
    return event_id
