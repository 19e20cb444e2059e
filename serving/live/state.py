"""Everything live the service holds besides the model: live views, the live corpus, the sync loop.

`LiveState` is made once per process by `open_live_state(settings, store)`: with `redis_url` both
live views and live articles are in Redis (every replica sees every write), otherwise in this
process. `history(pair, store, user_id)` is the history a request encodes: the snapshot row merged
with the live views newer than the snapshot's as_of, attributes filled from the live corpus.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from homefeed import features
from serving.live.articles import EmbeddedArticleLog, RedisArticleLog
from serving.live.clock import WALL, ListingClock
from serving.live.corpus import LiveCorpus
from serving.live.durable import MEMORY, LiveJournal
from serving.live.events import EmbeddedLiveViews, RedisLiveViews, decode_live, merge_history
from serving.live.overlay import LiveOverlay
from serving.store import HistoryRow, RedisStore, StoreUnavailableError

LOG = logging.getLogger(__name__)

DEFAULT_SYNC_INTERVAL_S = 0.25
FAILURE_REPORT_INTERVAL_S = 60.0  # while the store is down, how often the sync loop says so again


@dataclass
class LiveState:
    views: Any  # EmbeddedLiveViews | RedisLiveViews
    corpus: LiveCorpus
    history_length: int

    def overlay(self, pair) -> LiveOverlay:
        return self.corpus.overlay(pair)

    def history(self, pair, store, user_id: str, overlay: LiveOverlay | None = None) -> HistoryRow | None:
        """The user's snapshot history merged with their live views (None: nobody knows the user).

        Raises:
          StoreUnavailableError: the store could not answer.
        """
        overlay = overlay or self.overlay(pair)
        store = store if store is not None else pair.histories
        if isinstance(store, RedisStore) and isinstance(self.views, RedisLiveViews):
            snapshot, raw = store.get_with(user_id, self.views.key(user_id))  # one round trip
            live = decode_live(raw, self.views.key(user_id))
        else:
            snapshot = store.get(user_id) if store is not None else None
            live = self.views.get(user_id)
        as_of = getattr(store, "as_of_ms", None) if store is not None else None
        return merge_history(snapshot, live, as_of, self.history_length, overlay.attributes)

    def prepare(self, pair) -> None:
        """What a reload calls before it swaps `pair` in (serving/versions/holder.py): the live
        listings' vectors and overlay for `pair`, and its region index, off the request path."""
        from serving.live.model import region_index

        started = time.perf_counter()
        self.corpus.prepare(pair)
        region_index(pair)
        LOG.info(
            "live corpus prepared for model %s in %.1fs (%d live records)",
            getattr(pair, "version", "?"),
            time.perf_counter() - started,
            len(self.corpus.records),
        )

    def warm(self, pair) -> None:
        """Builds what requests of `pair` need (overlay, region index) before the first one asks."""
        from serving.live.model import region_index

        self.corpus.overlay(pair)
        region_index(pair)

    async def sync_forever(self, interval_s: float, holder=None) -> None:
        """Pulls other writers' article changes every `interval_s` and warms a newly loaded model
        (runs until cancelled)."""
        warmed = None
        failing_since, failures, reported = None, 0, 0.0  # an outage is logged once, then every minute
        while True:
            try:
                pair = holder.pair if holder is not None else None
                if pair is not None and pair is not warmed:
                    await asyncio.to_thread(self.warm, pair)
                    warmed = pair
                changed = await asyncio.to_thread(self.corpus.sync, pair)
                if failing_since is not None:
                    LOG.warning(
                        "live corpus sync works again after %.0fs (%d failed attempts)",
                        time.monotonic() - failing_since,
                        failures,
                    )
                    failing_since, failures = None, 0
                if changed:
                    LOG.info("live corpus: %d change(s) from %s", changed, self.corpus.log.description)
            except StoreUnavailableError as error:
                now = time.monotonic()
                failures += 1
                if failing_since is None or now - reported >= FAILURE_REPORT_INTERVAL_S:
                    still = (
                        "" if failing_since is None else f" (still, {failures} attempts in {now - failing_since:.0f}s)"
                    )
                    LOG.warning("live corpus sync failed%s, will retry every %gs: %s", still, interval_s, error)
                    failing_since, reported = failing_since or now, now
            except Exception:  # the loop must outlive any one failure
                LOG.exception("live corpus sync failed; will retry")
            await asyncio.sleep(interval_s)

    def close(self) -> None:
        self.views.close()
        self.corpus.log.close()  # a journal both share closes twice: the second is a no-op


def open_live_state(settings, store) -> LiveState:
    """Live views and articles in Redis when `settings.redis_url` is set, else in this process."""
    history_length = getattr(settings, "history_length", features.HISTORY_LENGTH)
    views: RedisLiveViews | EmbeddedLiveViews
    log: RedisArticleLog | EmbeddedArticleLog
    if settings.redis_url:
        views = RedisLiveViews(
            settings.redis_url, settings.redis_prefix, cap=history_length, ttl_s=getattr(settings, "live_ttl_s", 0)
        )
        log = RedisArticleLog(settings.redis_url, settings.redis_prefix)
    else:
        where = getattr(settings, "live_store", None)
        journal = LiveJournal(where) if where and where != MEMORY else None
        max_users = getattr(settings, "live_max_users", 1_000_000)
        views = EmbeddedLiveViews(cap=history_length, max_users=max_users, journal=journal)
        log = EmbeddedArticleLog(journal=journal)
    corpus = LiveCorpus(log, ListingClock(getattr(settings, "listing_age_clock", WALL)))
    try:
        corpus.sync()
    except StoreUnavailableError as error:
        LOG.error("cannot read live articles yet (%s); the sync loop keeps trying", error)
    LOG.info(
        "live views in %s; live articles in %s (%d known)", views.description, log.description, len(corpus.records)
    )
    return LiveState(views, corpus, history_length)
