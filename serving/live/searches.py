"""Live search events: `{"type": "search", "user_id", "query", "searched_at"}` items.

    {"type": "search", "user_id": "u1", "query": "baby stroller", "searched_at": "2024-06-01T12:00:00Z",
     "event_id": "optional idempotency key"}

A valid search is stored in the user's live list beside their live views (serving/live/events.py),
as `[searched_at_ms, "", key, query]`: the same list, the same stores (embedded, Redis), the same
idempotency (the key is `event_id`, or `searched_at|query`), the same newest-first order; the
empty article id and the fourth element tell it apart from a view. At most
`features.SEARCH_LENGTH` searches and H views are kept per user. At read time `merge_queries`
puts the live queries newer than the snapshot's as_of in front of the snapshot's `recent_queries`.

Queries are kept as sent (cut to `features.QUERY_MAX_CHARS`); the encoder normalises them, as the
extract does for training (homefeed.tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from homefeed import features
from serving.live.items import checked_event_id, checked_time_ms, checked_user_id

SEARCH = "search"
SEARCH_FIELDS = frozenset({"type", "user_id", "query", "searched_at", "event_id"})


@dataclass(frozen=True)
class LiveSearch:
    """One valid search: who, what text, when (ms since the epoch, UTC), its idempotency key."""

    user_id: str
    query: str
    searched_at_ms: int
    key: str

    def entry(self) -> list:
        return [self.searched_at_ms, "", self.key, self.query]


def is_search(entry: Sequence[Any]) -> bool:
    """Whether a live-list entry is a search (else a view)."""
    return len(entry) == 4


def parse_search(item: Mapping[str, Any], known_article: Callable[[str], bool] | None, now_s: float) -> LiveSearch:
    """A `{"type": "search", ...}` item. Raises ValueError with the per-item reason."""
    del known_article  # a search names no article
    unknown = sorted(set(item) - SEARCH_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; a search has {sorted(SEARCH_FIELDS)}")
    user_id = checked_user_id(item)
    query = item.get("query")
    if not isinstance(query, str):
        raise ValueError(f"query must be a string, got {type(query).__name__}")
    query = query.strip()[: features.QUERY_MAX_CHARS]
    if not query:
        raise ValueError("query is empty or blank")
    searched_at_ms = checked_time_ms(item, "searched_at", now_s)
    event_id = checked_event_id(item)
    key = f"id:{event_id}" if event_id else f"q:{searched_at_ms}|{query}"
    return LiveSearch(user_id, query, searched_at_ms, key)


def cap_entries(entries: Sequence[list], view_cap: int, search_cap: int = features.SEARCH_LENGTH) -> list[list]:
    """`entries` (newest first) with at most `view_cap` views and `search_cap` searches, order kept."""
    views = searches = 0
    kept = []
    for entry in entries:
        if is_search(entry):
            searches += 1
            if searches <= search_cap:
                kept.append(entry)
        else:
            views += 1
            if views <= view_cap:
                kept.append(entry)
    return kept


def merge_queries(
    row: dict | None, snapshot: Mapping | None, live: Sequence[list], as_of_ms: int | None
) -> dict | None:
    """`row` (the merged views, or None) with `recent_queries`: the live searches newer than the
    snapshot's as_of, newest first, then the snapshot's, at most `features.SEARCH_LENGTH`.
    Returns `row` unchanged when there is nothing to add."""
    newer = [e[3] for e in live if is_search(e) and (snapshot is None or as_of_ms is None or e[0] > as_of_ms)]
    if not newer:
        return row
    if row is None:
        row = dict(snapshot) if snapshot is not None else {features.HISTORY: []}
    else:
        row = dict(row)
    old = list((snapshot or {}).get(features.RECENT_QUERIES) or [])
    row[features.RECENT_QUERIES] = (newer + old)[: features.SEARCH_LENGTH]
    return row
