"""Checks every live item shares (views, searches): user ids, event ids, RFC 3339 timestamps.

Each raises ValueError whose message is the per-item reason the write endpoints return.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from homefeed.redact import preview

ID_PATTERN = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")  # the same ids the candidates URL takes
MAX_EVENT_ID_LENGTH = 256
FUTURE_TOLERANCE_S = 300  # clocks disagree a little; a view from further in the future is refused
# Checked before anything else reads an item (`check_size`): no field of any item kind is longer
# (a search query is cut to features.QUERY_MAX_CHARS, ids are at most 256), and no item kind has
# more fields, so the cost of rejecting an item never grows with what a client sends.
MAX_FIELD_CHARS = 2048
MAX_ITEM_FIELDS = 16
MAX_TIMESTAMP_CHARS = 40
# RFC 3339 date-time (section 5.6): what every timestamp field takes. datetime.fromisoformat alone
# takes more (ISO week dates, missing seconds) that other readers of a stored value (pandas) refuse.
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})")


def check_size(item: Mapping[str, Any], max_chars: int = MAX_FIELD_CHARS) -> None:
    """ValueError when `item` has more than `MAX_ITEM_FIELDS` fields or a string field longer than
    `max_chars`: the first check on any client item, before a pattern or parser touches a value."""
    if len(item) > MAX_ITEM_FIELDS:
        raise ValueError(f"an item has at most {MAX_ITEM_FIELDS} fields, got {len(item)}")
    for name, value in item.items():
        if len(name) > 64:
            raise ValueError(f"field name {preview(name)} is longer than 64 characters")
        if isinstance(value, str) and len(value) > max_chars:
            raise ValueError(f"{name} is {len(value)} characters long; the limit is {max_chars}")
        if isinstance(value, (list, dict)):
            raise ValueError(f"{name} must be a string or null, got {type(value).__name__}")


def parse_timestamp(value: Any, field: str = "viewed_at") -> int:
    """An RFC 3339 timestamp with offset (`2024-06-01T12:00:00Z`, `...+02:00`) as ms since the epoch.

    Raises:
      ValueError: not a string, not RFC 3339, or without a time zone offset.
    """
    if not isinstance(value, str):
        raise ValueError(f"{field} must be an RFC 3339 string such as 2024-06-01T12:00:00Z, got {type(value).__name__}")
    if len(value) > MAX_TIMESTAMP_CHARS:
        raise ValueError(
            f"{field} is {len(value)} characters long; an RFC 3339 timestamp has at most {MAX_TIMESTAMP_CHARS}"
        )
    text = value.strip()
    if not RFC3339.fullmatch(text):
        if RFC3339.fullmatch(text + "Z") or RFC3339.fullmatch(text + ":00Z"):
            raise ValueError(f"{field} {preview(value)} has no time zone offset; RFC 3339 needs one (Z or +hh:mm)")
        raise ValueError(f"{field} {preview(value)} is not an RFC 3339 timestamp (e.g. 2024-06-01T12:00:00Z)")
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" else text)
    except ValueError:
        raise ValueError(f"{field} {preview(value)} is not an RFC 3339 timestamp (e.g. 2024-06-01T12:00:00Z)") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{field} {preview(value)} has no time zone offset; RFC 3339 needs one (Z or +hh:mm)")
    try:  # years near 1 or 9999 with an offset leave the range of datetime once shifted to UTC
        return int(parsed.astimezone(UTC).timestamp() * 1000)
    except (OverflowError, ValueError, OSError):
        raise ValueError(f"{field} {preview(value)} is outside the years 1-9999 once converted to UTC") from None


def format_timestamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def checked_user_id(item: Mapping[str, Any]) -> str:
    """The item's `user_id`, or ValueError with the rule (every event type)."""
    user_id = item.get("user_id")
    if not isinstance(user_id, str) or not ID_PATTERN.fullmatch(user_id):
        raise ValueError(f"user_id must be 1-128 characters of A-Z a-z 0-9 . _ : @ -, got {preview(user_id)}")
    return user_id


def checked_time_ms(item: Mapping[str, Any], field: str, now_s: float) -> int:
    """The item's RFC 3339 `field` in ms since the epoch, refused when in the future (beyond the tolerance)."""
    ms = parse_timestamp(item.get(field), field)
    if ms > (now_s + FUTURE_TOLERANCE_S) * 1000:
        raise ValueError(f"{field} {preview(item.get(field))} is in the future")
    return ms


def checked_event_id(item: Mapping[str, Any]) -> str | None:
    """The item's optional idempotency key `event_id`."""
    event_id = item.get("event_id")
    if event_id is not None and (not isinstance(event_id, str) or not event_id or len(event_id) > MAX_EVENT_ID_LENGTH):
        raise ValueError(f"event_id must be a non-empty string of at most {MAX_EVENT_ID_LENGTH} characters")
    return event_id
