"""The live corpus: listings created, changed, sold or deleted since the served model was built.

Conventions of vector stores (Vertex AI Vector Search, Qdrant, Milvus): an upsert is idempotent by
id and visible to the next query; a removal is a tombstone filtered at query time until the next
rebuild (the next published model) compacts it.

* records and where they are kept: serving/live/articles.py;
* what one served model makes of them (`LiveOverlay`): serving/live/overlay.py;
* `LiveCorpus` (here): the process's records plus the served model's overlay; a change is applied
  here first (read-your-write) and written to the log; `sync()` pulls other replicas' changes.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterable, Sequence

import numpy as np

from serving.live import ages as live_ages
from serving.live.articles import ArticleRecord
from serving.live.clock import ListingClock
from serving.live.commit import GroupCommit, embed
from serving.live.overlay import LiveOverlay, OverlayBuilder

LOG = logging.getLogger(__name__)


class LiveCorpus:
    """The process's live records (from `log`) and the overlay for the model being served.

    Writers (`upsert`, `sync`) apply changes to `records` and queue them; `refresh` feeds the queue
    to the served model's `OverlayBuilder` (O(changes)) and publishes a snapshot. A writer's call
    returns only once an overlay holding its change is published (read-your-write); refreshes are
    serialised and each takes every change queued before it, so a burst of writes costs a few
    refreshes, not one each. Readers (`overlay`) never wait, except for the first overlay of a
    newly loaded model (built from all records: its own corpus plus the records after its as_of).
    """

    def __init__(self, log, clock: ListingClock | None = None):
        self.log = log
        self.clock = clock or ListingClock()  # the time listing ages are read at (serving/live/clock.py)
        self.records: dict[str, ArticleRecord] = {}
        self.seq = 0
        self._overlay: LiveOverlay | None = None
        self._builder: OverlayBuilder | None = None
        self._queue: list[ArticleRecord] = []  # applied to `records`, not yet to the builder
        self._vectors: dict[tuple, np.ndarray] = {}  # (pair, (id, attributes)) -> vector `upsert` computed
        self._lock = threading.Lock()  # guards records / queue
        self._build_lock = threading.Lock()  # one refresh at a time
        self._commits = GroupCommit(self)
        self._prepared: OverlayBuilder | None = None  # the next model's, built off the request path
        self._since_prepared: list[ArticleRecord] | None = None  # changes applied since it was begun
        self.ages = live_ages.AgeRefresh()  # re-embeds listings whose age bucket changed (sync)
        if self.clock.follows_events:  # replayed time moves faster than the wall clock: every sync
            self.ages.interval_s = 0.0

    def upsert(self, records: Sequence[ArticleRecord], pair=None, vectors: dict | None = None) -> None:
        """Stores `records` (log first: nothing is served that was not stored) and applies them.

        With `pair`, the active ones are embedded first: a model that cannot embed them refuses
        the change (ValueError) before anything is stored. Concurrent writers are group-committed:
        whichever holds the commit lock embeds every waiting writer's listings in one article-tower
        call, stores them in one log write and publishes one overlay (serving/live/commit.py).
        `vectors`: the active records' vectors for `pair` from `embed`, when the caller made them
        beforehand (then no tower call here).
        """
        if pair is None:
            self.log.put(records)
            self._apply(records)
            return
        self._commits.submit(records, pair, vectors)

    def embed(self, records: Sequence[ArticleRecord], pair) -> dict:
        """The active `records`' vectors from `pair`'s article tower (ages at `clock`), as `upsert`
        takes them. Raises ValueError when the model cannot embed them."""
        return embed(pair, records, self.clock.now_ms(pair))

    def writes_inline(self, pair) -> bool:
        """Whether an upsert for `pair` may run on the caller's event loop instead of a thread.

        True when it can neither block nor take long: the log is in this process (no network
        call), `pair` embeds with the NumPy towers (~0.2 ms a listing, no SavedModel call), and no
        other writer or refresh holds the locks an upsert takes right now (a sync or an age refresh
        in a thread would make the loop wait). A thread hop costs more than such an upsert: waking
        the pool thread, handing the GIL to it and back, while a candidate request waits for the GIL
        (measured in benchmarks/live.py: docs/live.md)."""
        return (
            getattr(self.log, "in_process", False)
            and getattr(getattr(pair, "encoder", None), "kind", None) == "numpy"
            and not self._build_lock.locked()
            and not self._commits.busy()
        )

    def _commit(self, records: Sequence[ArticleRecord], pair, vectors: dict) -> None:
        """Stores and applies already embedded `records` (`vectors`: (id, attributes) -> vector)."""
        self.log.put(records)
        self._apply(records, {(pair, key): vector for key, vector in vectors.items()})

    def _apply(self, records: Iterable[ArticleRecord], vectors: dict | None = None) -> int:
        """Applies the records newer than what is held; returns how many. A record equal to the one
        held (this process's own write read back from the log by `sync`) changes nothing and is
        not queued, so it costs no second overlay refresh."""
        applied = 0
        with self._lock:
            for record in records:
                current = self.records.get(record.article_id)
                if current is None or (current.updated_ms <= record.updated_ms and current != record):
                    self.records[record.article_id] = record
                    self._queue.append(record)
                    if self._since_prepared is not None:
                        self._since_prepared.append(record)
                    applied += 1
            if vectors:
                self._vectors.update(vectors)
        return applied

    def sync(self, pair=None) -> int:
        """Applies changes from the log since the last sync (and refreshes `pair`'s overlay);
        returns how many were new to this process (its own writes read back are not)."""
        records, seq = self.log.changes_since(self.seq)
        applied = self._apply(records)
        self.seq = max(self.seq, seq)
        if pair is not None:
            self.refresh(pair)
            if self.ages.due():
                try:
                    self.refresh_ages(pair)
                except Exception:  # stale ages cost a little quality, never the sync
                    LOG.exception("re-embedding aged listings failed; will retry")
        return applied

    def refresh_ages(self, pair, now_ms: float | None = None) -> int:
        """Re-embeds the listings whose age bucket changed (serving/live/ages.py) and publishes an
        overlay serving their new vectors; returns how many."""
        from serving.live.model import embed_articles
        from trainer.towers.article_inputs import now_ms as wall_clock_ms

        started = time.perf_counter()
        if now_ms is None:
            now_ms = self.clock.now_ms(pair)  # an `events` clock: the replayed time, whatever the as_of
        if now_ms is None:
            now_ms = wall_clock_ms()
            as_of = pair.manifest.get("article_ages_at_ms")
            if as_of is not None and now_ms - as_of > live_ages.MAX_MODEL_AGE_MS:
                # A model cut long ago (historical or demo data): ages at the wall clock would be far
                # outside what it was trained on; its export's vectors stay.
                self.ages.finished(0, 0.0)
                return 0
        self.refresh(pair)
        with self._lock:
            live = dict(self.records)
        stale = self.ages.stale(pair, live_ages.active_with_created_at(live), now_ms)
        if stale:
            # A re-embedded model row is applied as a change of that listing; its record is not
            # stored (the listing did not change), only this process's overlay serves the vector.
            stamped = [dataclasses.replace(r, updated_ms=max(r.updated_ms, int(now_ms))) for r in stale]
            vectors = live_ages.as_vectors(stamped, embed_articles(pair, stamped, now_ms))
            with self._build_lock:
                if self._builder is not None and self._builder.pair is pair:
                    self._builder.apply(stamped, vectors)
                    self._overlay = self._builder.snapshot()
            self.ages.mark(stale, now_ms)
        self.ages.finished(len(stale), time.perf_counter() - started)
        return len(stale)

    def prepare(self, pair) -> None:
        """Builds `pair`'s overlay from every record (one article-tower call per listing: seconds
        for 10^5 listings) without touching the served model's, so a reload can call it on its own
        thread before the swap; the first request of `pair` then only applies the changes made
        meanwhile (`refresh`). Requests keep being answered by the served model until the swap."""
        with self._lock:
            everything = list(self.records.values())
            self._since_prepared = []
        builder = OverlayBuilder(pair, clock=self.clock)
        builder.apply(everything)
        with self._build_lock:
            self._prepared = builder

    def refresh(self, pair) -> LiveOverlay:
        """The overlay of `pair` holding every change applied so far."""
        with self._build_lock:
            prepared = None
            with self._lock:
                queue, self._queue = self._queue, []
                vectors, self._vectors = self._vectors, {}
                new_model = self._builder is None or self._builder.pair is not pair
                if new_model and self._prepared is not None and self._prepared.pair is pair:
                    prepared, queue = self._prepared, self._since_prepared or []
                    self._prepared, self._since_prepared = None, None
                everything = list(self.records.values()) if new_model and prepared is None else None
            if self._overlay is not None and self._overlay.pair is pair and not queue:
                return self._overlay
            started = time.perf_counter()
            if prepared is not None:  # built by `prepare`: only the changes since then are applied
                self._builder = prepared
            elif everything is not None:  # a model not seen before: from all records
                self._builder = OverlayBuilder(pair, clock=self.clock)
                queue = everything
            latest = {r.article_id: r for r in queue}  # the last change of each id wins
            assert self._builder is not None  # made above, or found for `pair` under the lock
            self._builder.apply(latest.values(), {key: v for (owner, key), v in vectors.items() if owner is pair})
            self._overlay = overlay = self._builder.snapshot()
            LOG.debug(
                "live corpus for model %s: %d change(s) applied in %.1f ms (%d listing slot(s), %d model row(s) hidden)",
                pair.version,
                len(latest),
                (time.perf_counter() - started) * 1000,
                overlay.n_side,
                overlay.dead_rows.size,
            )
            return overlay

    def overlay(self, pair) -> LiveOverlay:
        """The newest published overlay of `pair` (built only when `pair` has none yet)."""
        overlay = self._overlay
        if overlay is not None and overlay.pair is pair:
            return overlay
        return self.refresh(pair)

    def get(self, article_id: str) -> ArticleRecord | None:
        return self.records.get(article_id)
