"""The clock listing ages are read from (settings' `listing_age_clock`).

A listing's vector includes its age (homefeed.features.age_bucket), so the service needs a "now"
when it embeds an upserted listing (serving/live/commit.py) and when it re-embeds the listings
whose age bucket changed (serving/live/ages.py):

* `wall` (the default): the machine's clock, what a live service wants.
* `events`: the time of the latest view or search this process accepted on `POST /v1/events`,
  never earlier than the served model's as_of. A replay of past traffic (serving/replay, `candidates
  replay`) posts its views in time order, so the service ages listings as they were at the
  replayed time instead of at today's date. The age refresh then runs on every live sync
  (`live_sync_interval_s`) rather than once a minute, since replayed time moves fast. Each process
  follows the events it received (with several workers, each its own).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

WALL = "wall"
EVENTS = "events"
CLOCKS = (WALL, EVENTS)


class ListingClock:
    """`now_ms(pair)`: the time listing ages are computed at, None meaning the wall clock."""

    def __init__(self, kind: str = WALL):
        if kind not in CLOCKS:
            raise ValueError(f"listing age clock {kind!r} is not one of {list(CLOCKS)}")
        self.kind = kind
        self._latest_ms: int | None = None
        self._lock = threading.Lock()

    @property
    def follows_events(self) -> bool:
        return self.kind == EVENTS

    def observe(self, items: Iterable[Any]) -> None:
        """Moves an `events` clock to the latest time of the accepted `items` (views, searches)."""
        if not self.follows_events:
            return
        times = [getattr(i, "viewed_at_ms", None) or getattr(i, "searched_at_ms", None) for i in items]
        latest = max((t for t in times if t is not None), default=None)
        if latest is None:
            return
        with self._lock:
            if self._latest_ms is None or latest > self._latest_ms:
                self._latest_ms = latest

    def now_ms(self, pair: Any = None) -> float | None:
        """The `events` clock's time (at least `pair`'s as_of, `article_ages_at_ms` in its manifest);
        None for the wall clock, or for an `events` clock that has neither an event nor an as_of yet."""
        if not self.follows_events:
            return None
        as_of = (getattr(pair, "manifest", None) or {}).get("article_ages_at_ms")
        known = [t for t in (self._latest_ms, as_of) if t is not None]
        return float(max(known)) if known else None
