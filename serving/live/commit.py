"""Group commit of listing upserts: one article-tower call, one log write, one overlay per batch.

An upsert costs a SavedModel call (about 0.5 ms of CPU whatever the batch size up to ~64 rows),
a log write (one Redis round trip) and an overlay publish. Writers that arrive while another
writer commits queue their changes; the next one to take the commit lock takes every queued
change of the same model and commits them together, as databases group-commit their WAL. Nothing
waits on purpose (no linger): alone, a writer commits at once; under load, batches grow with the
queue. Each writer still returns only once an overlay holding its change is published
(read-your-write), and a writer whose own listings cannot be embedded gets its ValueError while
the others' changes go through.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from serving.live.articles import ArticleRecord
from serving.live.model import embed_articles

LOG = logging.getLogger(__name__)


@dataclass(eq=False)
class _Change:
    records: Sequence[ArticleRecord]
    pair: object
    done: bool = False
    error: BaseException | None = None
    vectors: dict = field(default_factory=dict)
    embedded: bool = False  # `vectors` given by the writer (`GroupCommit.embed`), not made in the commit


def embed(pair, records: Sequence[ArticleRecord], now_ms: float | None = None) -> dict:
    """(id, attributes) -> vector for the active `records`, from one article-tower call; ages at
    `now_ms` (None: the wall clock)."""
    fresh = [r for r in records if r.active]
    return {(r.article_id, r.attributes()): v for r, v in zip(fresh, embed_articles(pair, fresh, now_ms))}


class GroupCommit:
    """Commits `LiveCorpus` upserts in batches (see the module doc). `stats` counts them."""

    def __init__(self, corpus):
        self.corpus = corpus
        self._queue: list[_Change] = []
        self._queue_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self.stats = {"commits": 0, "changes": 0}

    def submit(self, records: Sequence[ArticleRecord], pair, vectors: dict | None = None) -> None:
        """Embeds, stores and applies `records` for `pair`; returns once they are served.
        `vectors`: what `embed(pair, records)` gave, when the writer embedded them beforehand."""
        change = _Change(records, pair, vectors=dict(vectors or {}), embedded=vectors is not None)
        with self._queue_lock:
            self._queue.append(change)
        with self._commit_lock:
            if not change.done:
                with self._queue_lock:
                    batch = [c for c in self._queue if c.pair is change.pair]
                    self._queue = [c for c in self._queue if c.pair is not change.pair]
                self._commit(batch, change.pair)
        if change.error is not None:
            raise change.error

    def busy(self) -> bool:
        """Whether a commit is running or changes are queued for one."""
        return self._commit_lock.locked() or bool(self._queue)

    def _commit(self, batch: list[_Change], pair) -> None:
        try:
            self._embed(batch, pair)
            good = [c for c in batch if c.error is None]
            records = [r for c in good for r in c.records]
            vectors = {key: v for c in good for key, v in c.vectors.items()}
            if records:
                self.corpus._commit(records, pair, vectors)
                self.corpus.refresh(pair)
            self.stats["commits"] += 1
            self.stats["changes"] += len(good)
        except BaseException as error:  # e.g. the store is down: nothing of the batch was stored
            for change in batch:
                if change.error is None:
                    change.error = error
        finally:
            for change in batch:
                change.vectors = {}
                change.done = True
        if len(batch) > 1:
            LOG.debug("group commit of %d upserts for model %s", len(batch), getattr(pair, "version", "?"))

    def _embed(self, batch: list[_Change], pair) -> None:
        """Vectors for every change in one call; if that fails, change by change, so only the
        changes the model cannot embed fail (with their own ValueError)."""
        batch = [c for c in batch if not c.embedded]
        if not batch:
            return
        now_ms = self.corpus.clock.now_ms(pair)  # the corpus's listing age clock (serving/live/clock.py)
        try:
            vectors = embed(pair, [r for c in batch for r in c.records], now_ms)
            for change in batch:
                change.vectors = {
                    (r.article_id, r.attributes()): vectors[(r.article_id, r.attributes())]
                    for r in change.records
                    if r.active
                }
            return
        except ValueError:
            if len(batch) == 1:
                raise
        for change in batch:
            try:
                change.vectors = embed(pair, change.records, now_ms)
            except ValueError as error:
                change.error = error
