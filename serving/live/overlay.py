"""What one served model makes of the live records: tombstones and new listings.

For a model (a `ModelPair`) the records newer than its as_of apply (a newly published model
therefore starts from its own corpus plus the records after its as_of):

* each hides the model's own row of that id: a tombstone, filtered at query time;
* each active one is a row of a small side set, with its vector from the model's article tower,
  searched exactly next to the main index. Rows `0..n-1` are the model's, `n..n+m-1` the side set's.

`OverlayBuilder` keeps this state and applies changes in O(changed records): side vectors live in
a buffer that grows by doubling, a listing that changes gets a new slot and its old slot is marked
dead. Once dead slots outnumber live ones (and there are at least `COMPACT_MIN_SLOTS`), the builder
compacts: fresh buffers and maps holding one slot per live listing, so slots stay below twice the
live listings however often one listing is updated (90k updates of one listing: at most
`COMPACT_MIN_SLOTS` slots), and each request scores only those. Compaction costs O(live listings)
once per as many updates: O(1) amortised. Published overlays keep the old buffers and maps, which
the builder no longer changes. `snapshot()` publishes an immutable `LiveOverlay`
in O(live records) of C-level copies (no Python loop over the records), so requests read one
consistent state while the builder moves on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from homefeed import features
from serving.live.articles import ArticleRecord
from serving.live.model import PairCorpus, embed_articles, pair_corpus

LOG = logging.getLogger(__name__)

COMPACT_MIN_SLOTS = 64


@dataclass(frozen=True, eq=False)
class LiveOverlay:
    """One served model's view of the live records.

    Publishing one must not cost O(live records): `records`, `side_ids`, `side_row_of` and
    `side_former_slots` are the builder's own containers, shared by every overlay it publishes and
    only ever added to (a slot's id and an id's former slots never change). What a snapshot fixes
    is its slot count m and its arrays (`side_vectors`, `side_region_codes`, `side_alive`), so an
    older overlay answers exactly as it did when published, except that `records` may hold a newer
    state of a listing (its title or attributes a few milliseconds early). Readers only look ids up
    (never iterate), and a slot from the shared maps is used only if it is below m.
    """

    pair: Any
    corpus: PairCorpus
    records: dict[str, ArticleRecord]  # the records that apply to this model
    dead_rows: np.ndarray  # model rows hidden by a newer record, sorted int64
    side_ids: list[str]  # slot -> article id (may run past m: use only the first m)
    side_vectors: np.ndarray  # float32 [m, d]
    side_region_codes: np.ndarray  # int32 [m], codes of `side_region_code`
    side_region_code: dict[str, int]
    side_alive: np.ndarray  # bool [m]: False for slots of changed or removed listings
    side_row_of: dict[str, int]  # article id -> its latest live slot (shared: may be >= m, see below)
    side_former_slots: dict[str, list[int]] = field(default_factory=dict)  # id -> slots it held before

    @property
    def n_main(self) -> int:
        return self.pair.n_articles

    @property
    def n_side(self) -> int:
        return int(self.side_vectors.shape[0])

    def article_id(self, row: int) -> str:
        return self.pair.article_ids[row] if row < self.n_main else self.side_ids[row - self.n_main]

    def title(self, row: int) -> str | None:
        if row < self.n_main:
            return self.pair.titles[row] if self.pair.titles is not None else None
        return self.records[self.side_ids[row - self.n_main]].title

    def candidate_items(self, rows, scores, include_titles: bool) -> list[dict]:
        """`{"article_id", "score"[, "title"]}` per row: `article_id(r)` and `title(r)` for k rows at
        once (the answer's hot loop: the lists are read once, not through two calls per row)."""
        n_main, side_ids, records = self.n_main, self.side_ids, self.records
        main = [r for r in rows if r < n_main]  # the model's rows: read in one call each
        ids = dict(zip(main, self.pair.article_ids.take(main)))
        titles = (
            dict(zip(main, self.pair.titles.take(main))) if include_titles and self.pair.titles is not None else None
        )
        items = []
        for r, s in zip(rows, scores):
            if r < n_main:
                item = {"article_id": ids[r], "score": s}
                title = titles[r] if titles is not None else None
            else:
                article_id = side_ids[r - n_main]
                item = {"article_id": article_id, "score": s}
                title = records[article_id].title if include_titles else None
            if title is not None:
                item["title"] = title
            items.append(item)
        return items

    def is_known(self, article_id: str) -> bool:
        return article_id in self.records or article_id in self.corpus.row_of

    def attributes(self, article_id: str) -> tuple[str, ...]:
        record = self.records.get(article_id)
        if record is not None:
            return record.attributes()
        row = self.corpus.row_of.get(article_id)
        if row is None:
            return tuple(features.MISSING_ATTRIBUTE for _ in features.ARTICLE_ATTRIBUTES)
        return tuple(self.corpus.attributes[a][row] for a in features.ARTICLE_ATTRIBUTES)

    def is_dead_row(self, row: int) -> bool:
        if not self.dead_rows.size:
            return False
        i = np.searchsorted(self.dead_rows, row)
        return bool(i < self.dead_rows.size and self.dead_rows[i] == row)

    def side_allowed(self, regions: set[str] | None, seen: Iterable[str]) -> np.ndarray:
        """Bool [m]: live slots in `regions` (None: any) whose listing is not in `seen`."""
        allowed = self.side_alive.copy()
        if regions is not None:
            codes = [self.side_region_code[r] for r in regions if r in self.side_region_code]
            allowed &= np.isin(self.side_region_codes, np.asarray(codes, dtype=np.int32))
        m, former = allowed.size, self.side_former_slots
        for article_id in seen:
            slot = self.side_row_of.get(article_id)
            if slot is not None and slot < m:
                allowed[slot] = False
            for slot in former.get(article_id, ()):  # a listing changed since: its slots here too
                if slot < m:
                    allowed[slot] = False
        return allowed


class OverlayBuilder:
    """The mutable state behind a model's overlays (the caller serialises `apply`/`snapshot`)."""

    def __init__(self, pair, capacity: int = 64, clock=None):
        self.pair = pair
        self.clock = clock  # serving/live/clock.py: listing ages for the vectors made here (None: the wall clock)
        self.corpus = pair_corpus(pair)
        self.as_of = self.corpus.as_of_ms
        self.applying: dict[str, ArticleRecord] = {}
        self.dead: set[int] = set()
        self._dead_sorted = np.zeros(0, dtype=np.int64)  # `dead`, sorted (a new array per change)
        self.m = 0
        self.vectors = np.zeros((capacity, pair.index.d), dtype=np.float32)
        self.region_codes = np.zeros(capacity, dtype=np.int32)
        self.alive = np.zeros(capacity, dtype=bool)
        self.side_ids: list[str] = []
        self.slot_of: dict[str, int] = {}
        self.former_slots: dict[str, list[int]] = {}
        self.region_code: dict[str, int] = {}

    def applies(self, record: ArticleRecord) -> bool:
        return self.as_of is None or record.updated_ms > self.as_of

    def apply(self, records: Iterable[ArticleRecord], vectors: Mapping[tuple, np.ndarray] | None = None) -> None:
        """Applies `records` (the latest state of each id); `vectors` may hold ones already computed."""
        records = [r for r in records if self.applies(r)]
        vectors = dict(vectors or {})
        missing = [r for r in records if r.active and (r.article_id, r.attributes()) not in vectors]
        if missing:
            try:
                now_ms = self.clock.now_ms(self.pair) if self.clock is not None else None
                for record, vector in zip(missing, embed_articles(self.pair, missing, now_ms)):
                    vectors[(record.article_id, record.attributes())] = vector
            except Exception as error:  # tombstones must still apply; new listings wait for a model that can embed
                LOG.error(
                    "model %s cannot embed %d new listing(s), they are not served: %s",
                    self.pair.version,
                    len(missing),
                    error,
                )
        newly_dead: list[int] = []
        model_rows = self.corpus.row_of.rows([r.article_id for r in records]).tolist()  # one lookup for all
        for record, row in zip(records, model_rows):
            article_id = record.article_id
            self.applying[article_id] = record
            if row >= 0 and row not in self.dead:
                self.dead.add(row)
                newly_dead.append(row)
            old = self.slot_of.get(article_id)
            if old is not None:  # recorded as former before it leaves slot_of (published overlays read both)
                self.alive[old] = False
                self.former_slots.setdefault(article_id, []).append(old)
            vector = vectors.get((article_id, record.attributes())) if record.active else None
            if vector is not None:
                self.slot_of[article_id] = self._append(article_id, record.region or features.MISSING_ATTRIBUTE, vector)
            elif old is not None:
                del self.slot_of[article_id]
        if newly_dead:  # merged into the sorted array: O(rows hidden) memory copy, no re-sort of all
            new = np.sort(np.asarray(newly_dead, dtype=np.int64))
            self._dead_sorted = np.insert(self._dead_sorted, np.searchsorted(self._dead_sorted, new), new)
        if self.m >= COMPACT_MIN_SLOTS and 2 * len(self.slot_of) < self.m:
            self._compact()

    def _compact(self) -> None:
        """One slot per live listing, in new buffers and maps (see the module doc)."""
        live = sorted(self.slot_of.items(), key=lambda item: item[1])
        slots = np.asarray([slot for _, slot in live], dtype=np.int64)
        capacity = max(COMPACT_MIN_SLOTS, 2 * len(live))
        n = len(live)
        vectors = np.zeros((capacity, self.vectors.shape[1]), dtype=np.float32)
        region_codes = np.zeros(capacity, dtype=np.int32)
        alive = np.zeros(capacity, dtype=bool)
        vectors[:n], region_codes[:n], alive[:n] = self.vectors[slots], self.region_codes[slots], True
        self.vectors, self.region_codes, self.alive = vectors, region_codes, alive
        self.side_ids = [article_id for article_id, _ in live]
        self.slot_of = {article_id: i for i, (article_id, _) in enumerate(live)}
        self.former_slots = {}
        LOG.debug("overlay of model %s compacted: %d slots -> %d", self.pair.version, self.m, n)
        self.m = n

    def _append(self, article_id: str, region: str, vector: np.ndarray) -> int:
        if self.m == self.vectors.shape[0]:  # grow by doubling; published views keep the old buffers
            self.vectors = np.concatenate([self.vectors, np.zeros_like(self.vectors)])
            self.region_codes = np.concatenate([self.region_codes, np.zeros_like(self.region_codes)])
            self.alive = np.concatenate([self.alive, np.zeros_like(self.alive)])
        slot = self.m
        self.vectors[slot] = vector
        self.region_codes[slot] = self.region_code.setdefault(region, len(self.region_code))
        self.alive[slot] = True
        self.side_ids.append(article_id)
        self.m += 1
        return slot

    def snapshot(self) -> LiveOverlay:
        m = self.m
        return LiveOverlay(
            pair=self.pair,
            corpus=self.corpus,
            records=self.applying,  # shared, see LiveOverlay
            dead_rows=self._dead_sorted,
            side_ids=self.side_ids,
            side_vectors=self.vectors[:m],
            side_region_codes=self.region_codes[:m],
            side_region_code=dict(self.region_code),
            side_alive=self.alive[:m].copy(),
            side_row_of=self.slot_of,
            side_former_slots=self.former_slots,
        )


def build_overlay(pair, records: Mapping[str, ArticleRecord]) -> LiveOverlay:
    """The overlay of `records` (the latest state per id) for `pair`, built from scratch."""
    builder = OverlayBuilder(pair)
    builder.apply(records.values())
    return builder.snapshot()
