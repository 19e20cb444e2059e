"""Live user views: the event item model, per-item validation, and each user's live history.

A `POST /v1/events` body (and each entry of the Redis Stream that `candidates consume-events`
reads) holds items like

    {"type": "view", "user_id": "u1", "article_id": "a7", "viewed_at": "2024-06-01T12:00:00Z",
     "event_id": "optional idempotency key"}

`type` is optional and defaults to "view"; it is the discriminator that lets other item kinds
join without changing how views are read: `{"type": "search", ...}` items are parsed and stored
by serving/live/searches.py, in the same per-user list. Every item is checked on its own
(`parse_item`): a bad one is reported with its index and reason, never fails the others.

Live views are kept per user, apart from the batch snapshot, as a list of
`[viewed_at_ms, article_id, key]`, newest first, at most H long (`apply_views`). The key is the
item's `event_id`, or `viewed_at|article_id` without one, so the same event delivered twice is
stored once, and events arriving out of order still land in time order. At read time
`merge_history` puts the live views newer than the snapshot's as_of in front of the snapshot
history (newest wins by event time, never by arrival) and fills the attribute arrays from the live
corpus.

Two stores hold the live views: `EmbeddedLiveViews` (this process; survives model reloads) and
`RedisLiveViews` (one JSON value per user next to the snapshot key, read with it in one MGET;
written with WATCH/MULTI so replicas and consumers never lose each other's writes).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson

from homefeed import features
from homefeed.redact import preview
from serving.live.items import (
    check_size,
    checked_event_id,
    checked_time_ms,
    checked_user_id,
)
from serving.live.searches import (
    SEARCH,
    cap_entries,
    is_search,
    merge_queries,
    parse_search,
)
from serving.store import HistoryRow, StoreUnavailableError, _client, _redact, report_corrupt

LOG = logging.getLogger(__name__)

MAX_EVENTS_PER_REQUEST = 1000
VIEW = "view"
MAX_ARTICLE_ID_LENGTH = 256
# Any printable text: no control characters, and no U+FFFD (what undecodable URL bytes such as %ff
# become, so two different raw ids would name one listing).
ARTICLE_ID_PATTERN = r"^[^\x00-\x1f\x7f\ufffd]{1,256}$"
_ARTICLE_ID = re.compile(ARTICLE_ID_PATTERN)


def valid_article_id(value: Any) -> TypeGuard[str]:
    return (
        isinstance(value, str) and _ARTICLE_ID.fullmatch(value) is not None
    )  # fullmatch: `$` alone lets a final "\n" through


ARTICLE_ID_RULE = f"article_id must be 1-{MAX_ARTICLE_ID_LENGTH} characters without control characters or U+FFFD"
ITEM_FIELDS = frozenset({"type", "user_id", "article_id", "viewed_at", "event_id"})  # of a view

LiveEntry = list  # [viewed_at_ms: int, article_id: str, key: str]


@dataclass(frozen=True)
class LiveView:
    """One valid view: who, what, when (ms since the epoch, UTC), and its idempotency key."""

    user_id: str
    article_id: str
    viewed_at_ms: int
    key: str

    def entry(self) -> LiveEntry:
        return [self.viewed_at_ms, self.article_id, self.key]


def parse_item(item: Any, known_article: Callable[[str], bool] | None, now_s: float | None = None) -> LiveView:
    """One event item -> its typed event (today only `LiveView`), by the item's `type`.

    Args:
      item: the decoded JSON item.
      known_article: `article_id -> bool`; None skips the check (no corpus at hand).
      now_s: the current time (for the future check); default: the clock.

    Raises:
      ValueError: the item is invalid; the message is the per-item reason.
    """
    if not isinstance(item, Mapping):
        raise ValueError(f"an event must be a JSON object, got {type(item).__name__}")
    check_size(item)  # first: nothing below reads a value of unbounded size
    kind = item.get("type", VIEW)
    parser = ITEM_PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise ValueError(f"unknown event type {preview(kind)}; supported: {', '.join(ITEM_PARSERS)}")
    return parser(item, known_article, time.time() if now_s is None else now_s)


def parse_view(item: Mapping[str, Any], known_article: Callable[[str], bool] | None, now_s: float) -> LiveView:
    """A `{"type": "view", ...}` item (see `parse_item`)."""
    unknown = sorted(set(item) - ITEM_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; a view has {sorted(ITEM_FIELDS)}")
    user_id = checked_user_id(item)
    article_id = item.get("article_id")
    if not valid_article_id(article_id):
        raise ValueError(f"{ARTICLE_ID_RULE}, got {preview(article_id)}")
    viewed_at_ms = checked_time_ms(item, "viewed_at", now_s)
    event_id = checked_event_id(item)
    if known_article is not None and not known_article(article_id):
        raise ValueError(f"unknown article {preview(article_id)} (not in the served corpus nor a live listing)")
    key = f"id:{event_id}" if event_id else f"{viewed_at_ms}|{article_id}"
    return LiveView(user_id, article_id, viewed_at_ms, key)


# One parser per item type; searches have theirs in serving/live/searches.py.
ITEM_PARSERS: dict[str, Callable[..., Any]] = {VIEW: parse_view, SEARCH: parse_search}


def parse_items(
    items: Sequence[Any], known_article: Callable[[str], bool] | None
) -> tuple[list[LiveView], list[dict[str, Any]]]:
    """Valid views and `[{index, reason}]` for the invalid items, in item order."""
    views, rejected = [], []
    now_s = time.time()
    for index, item in enumerate(items):
        try:
            views.append(parse_item(item, known_article, now_s))
        except ValueError as error:
            rejected.append({"index": index, "reason": str(error)})
    return views, rejected


def decode_live(value: bytes | None, key: str) -> list[LiveEntry]:
    """A stored live list; a value this project did not write (not `[[ms, article_id, key], ...]`,
    with searches as `[ms, "", key, query]`) counts as empty, is counted and logged once
    (serving/store.py, `report_corrupt`), and is replaced by the user's next posted view."""
    if not value:
        return []
    try:
        entries = orjson.loads(value)
        if isinstance(entries, list) and all(
            isinstance(e, list)
            and len(e) in (3, 4)
            and isinstance(e[0], int)
            and all(isinstance(x, str) for x in e[1:])
            for e in entries  # views [ms, article_id, key]; searches [ms, "", key, query] (serving/live/searches.py)
        ):
            return entries
    except orjson.JSONDecodeError:
        pass
    report_corrupt("live views", key, f"not a list of [viewed_at_ms, article_id, key] ({preview(value[:60])}...)")
    return []


def _order(entry: LiveEntry) -> tuple[int, str]:
    return (entry[0], entry[2])


def apply_views(existing: Sequence[LiveEntry], views: Iterable[LiveView], cap: int) -> tuple[list[LiveEntry], int]:
    """`existing` with `views` added: newest first by event time, keys unique, at most `cap` long.

    Returns the new list and how many views were new (duplicates of a stored key are not).
    """
    keys = {entry[2] for entry in existing}
    merged = [list(entry) for entry in existing]
    added = 0
    for view in views:
        if view.key in keys:
            continue
        keys.add(view.key)
        merged.append(view.entry())
        added += 1
    merged.sort(key=_order, reverse=True)
    return cap_entries(merged, cap), added


def merge_history(
    snapshot: HistoryRow | None,
    live: Sequence[LiveEntry],
    as_of_ms: int | None,
    cap: int,
    attributes: Callable[[str], Sequence[str]] | None = None,
) -> HistoryRow | None:
    """The history to encode: live views newer than the snapshot's as_of, then the snapshot's.

    A user the snapshot does not know gets all their live views. `attributes(article_id)` gives
    the values of `features.ARTICLE_ATTRIBUTES` (the live corpus); without it they are missing.
    None when neither the snapshot nor the live views know the user.
    """
    if snapshot is None and not live:
        return None
    row = _merge_views(snapshot, [e for e in live if not is_search(e)], as_of_ms, cap, attributes)
    return merge_queries(row, snapshot, live, as_of_ms) if any(is_search(e) for e in live) else row


def _merge_views(
    snapshot: HistoryRow | None,
    live: Sequence[LiveEntry],
    as_of_ms: int | None,
    cap: int,
    attributes: Callable[[str], Sequence[str]] | None,
) -> HistoryRow | None:
    newer = [e for e in live if snapshot is None or as_of_ms is None or e[0] > as_of_ms]
    if not newer:
        return snapshot
    row: HistoryRow = {features.HISTORY: [e[1] for e in newer]}
    looked_up = [attributes(e[1]) if attributes else () for e in newer]
    for i, attr in enumerate(features.ARTICLE_ATTRIBUTES):
        row[features.history_attribute(attr)] = [
            values[i] if i < len(values) and values[i] is not None else features.MISSING_ATTRIBUTE
            for values in looked_up
        ]
    if snapshot is not None:
        for column in (features.HISTORY, *(features.history_attribute(a) for a in features.ARTICLE_ATTRIBUTES)):
            old = list(snapshot.get(column) or [])
            if column != features.HISTORY:  # keep the columns parallel even if the snapshot's are short
                old = (old + [features.MISSING_ATTRIBUTE] * len(snapshot.get(features.HISTORY) or []))[
                    : len(snapshot.get(features.HISTORY) or [])
                ]
            row[column] = row[column] + old
    merged = {column: values[:cap] for column, values in row.items()}
    if snapshot is not None and features.RECENT_QUERIES in snapshot:
        merged[features.RECENT_QUERIES] = list(snapshot[features.RECENT_QUERIES] or [])
    # The seen set: live views first, then the snapshot's, each article once, bounded.
    seen = [e[1] for e in newer] + list(
        (snapshot or {}).get(features.SEEN) or (snapshot or {}).get(features.HISTORY) or []
    )
    merged[features.SEEN] = list(dict.fromkeys(seen))[: features.SEEN_LENGTH]
    return merged


def group_by_user(views: Iterable[LiveView]) -> dict[str, list[LiveView]]:
    groups: dict[str, list[LiveView]] = {}
    for view in views:
        groups.setdefault(view.user_id, []).append(view)
    return groups


DEFAULT_MAX_USERS = 1_000_000


class EmbeddedLiveViews:
    """Live views in this process (the embedded store's companion); kept across model reloads.

    At most `max_users` users, each with at most `cap` entries: a write for a new user beyond it
    forgets the user written least recently (the dict is kept in write order), so memory is
    bounded by configuration whatever the number of distinct user ids posted.
    """

    description = "in-process live views"
    in_process = True  # `add` is a dict update under a short lock: the event loop may call it

    def __init__(self, cap: int = features.HISTORY_LENGTH, max_users: int = DEFAULT_MAX_USERS, journal=None):
        self.cap, self.max_users = cap, max_users
        self._views: dict[str, list[LiveEntry]] = {}
        self._lock = threading.Lock()
        self.evicted = 0
        # serving/live/durable.py: every add is committed there first, and read back at start.
        self.journal = journal
        if journal is not None:
            self.description = f"in-process live views, kept in {journal.description}"
            for user_id, value in journal.views():  # oldest write first: the cap keeps the newest
                entries = decode_live(value, f"{journal.description} views {user_id}")
                if entries:
                    self._views[user_id] = entries
            forgotten = self._evict()
            if forgotten:
                journal.put_views([], forgotten)

    def _evict(self) -> list[str]:
        forgotten = []
        while len(self._views) > self.max_users:
            user_id = next(iter(self._views))
            del self._views[user_id]
            forgotten.append(user_id)
            self.evicted += 1
        return forgotten

    def add(self, views: Sequence[LiveView]) -> int:
        """Stores `views` (in the journal first, when there is one); returns how many were new.

        Raises:
          StoreUnavailableError: the journal could not commit them; nothing was stored.
        """
        added = 0
        with self._lock:
            merged_by_user = {}
            for user_id, group in group_by_user(views).items():
                merged, n = apply_views(self._views.get(user_id, ()), group, self.cap)
                if n:
                    merged_by_user[user_id] = merged
                added += n
            if self.journal is not None and merged_by_user:
                try:
                    self.journal.put_views([(u, orjson.dumps(m)) for u, m in merged_by_user.items()])
                except Exception as error:
                    raise StoreUnavailableError(
                        f"{self.journal.description} did not take the views: {error}"
                    ) from error
            for user_id, merged in merged_by_user.items():
                self._views.pop(user_id, None)
                self._views[user_id] = merged  # last in write order
            forgotten = self._evict()
            if forgotten and self.journal is not None:  # a crash before this commit: evicted again at start
                self.journal.put_views([], forgotten)
        return added

    def get(self, user_id: str) -> list[LiveEntry]:
        return self._views.get(user_id, [])

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()


def live_key_prefix(history_prefix: str) -> str:
    """Where live views live in Redis: beside, never under, the snapshot prefix (no user id collides)."""
    return history_prefix.rstrip(":") + "-live:"


class RedisLiveViews:
    """Live views in Redis: `<prefix>-live:<user_id>` -> JSON list of entries (see module doc)."""

    MAX_RETRIES = 20

    def __init__(
        self,
        url: str,
        history_prefix: str,
        cap: int = features.HISTORY_LENGTH,
        timeout_s: float = 2.0,
        ttl_s: int = 0,
    ):
        self.prefix = live_key_prefix(history_prefix)
        self.cap = cap
        self.ttl_s = ttl_s or None  # a user's live views expire this long after their last write
        self.description = f"redis {_redact(url)} prefix {self.prefix!r}"
        self._redis = _client(url, timeout_s)

    def key(self, user_id: str) -> str:
        return self.prefix + user_id

    def add(self, views: Sequence[LiveView]) -> int:
        """Stores `views` atomically per batch (WATCH/MULTI, retried on a concurrent write)."""
        import redis

        groups = group_by_user(views)
        if not groups:
            return 0
        keys = [self.key(u) for u in groups]
        try:
            for attempt in range(self.MAX_RETRIES):
                with self._redis.pipeline() as pipe:
                    try:
                        pipe.watch(*keys)
                        values = pipe.mget(keys)
                        pipe.multi()
                        added = 0
                        for key, value, group in zip(keys, values, groups.values()):
                            existing = decode_live(value, key)
                            merged, n = apply_views(existing, group, self.cap)
                            if n:
                                pipe.set(key, orjson.dumps(merged), ex=self.ttl_s)
                            added += n
                        pipe.execute()
                        return added
                    except redis.WatchError:
                        time.sleep(0.001 * (attempt + 1))
            raise StoreUnavailableError(f"{self.description}: {self.MAX_RETRIES} concurrent writes in a row; try again")
        except redis.RedisError as error:
            raise StoreUnavailableError(f"writing live views to {self.description} failed: {error}") from error

    def get(self, user_id: str) -> list[LiveEntry]:
        import redis

        try:
            value = self._redis.get(self.key(user_id))
        except redis.RedisError as error:
            raise StoreUnavailableError(f"{self.description}: {error}") from error
        return decode_live(value, self.key(user_id))

    def close(self) -> None:
        self._redis.close()
