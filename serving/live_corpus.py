"""The live corpus: listings created, changed, sold or deleted since the served model was built.

Conventions of vector stores (Vertex AI Vector Search, Qdrant, Milvus): an upsert is idempotent by
id and visible to the next query; a removal is a tombstone filtered at query time until the next
rebuild (the next published model) compacts it.

* records and where they are kept: serving/live_articles.py;
* `LiveOverlay`: what one served model makes of the records, immutable once built:
  - every record newer than the model's as_of hides the model's own row of that id (tombstone);
  - an active one comes back as a row of a small side set, with its vector from the model's
    article tower (`article_vectors` signature), searched exactly next to the main index.
  Rows `0..n-1` are the model's, `n..n+m-1` the side set's.
* `LiveCorpus`: the process's records plus the current overlay; a change is applied here first
  (read-your-write) and written to the log; `sync()` pulls other replicas' changes.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from homefeed import features
from serving.live_articles import ArticleRecord

LOG = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# What a served model makes of the records.
# ---------------------------------------------------------------------------------------------
@dataclass(eq=False)
class PairCorpus:
    """Per served model: each row's attributes, the region codes and the model's as_of."""

    row_of: dict[str, int]
    attributes: dict[str, list[str]]  # attr -> value per row
    region_names: list[str]
    region_code: dict[str, int]
    region_codes: np.ndarray
    as_of_ms: int | None
    region_index: Any = None  # filtered_search.RegionIndex, built on first use
    article_tower: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_PAIR_CORPORA: "weakref.WeakKeyDictionary[Any, PairCorpus]" = weakref.WeakKeyDictionary()
_PAIR_LOCK = threading.Lock()


def model_as_of_ms(pair) -> int | None:
    """When the model's data was cut: its snapshot's as_of, else its newest `created_at`."""
    from serving.store import snapshot_as_of_ms

    histories = pair.model_dir / features.USER_HISTORIES_FILE
    if histories.exists():
        as_of = snapshot_as_of_ms(histories)
        if as_of is not None:
            return as_of
    try:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        path = pair.model_dir / features.CORPUS_FILE
        if "created_at" in pq.read_schema(path).names:
            newest = pc.max(pq.read_table(path, columns=["created_at"]).column(0)).as_py()
            if newest is not None and hasattr(newest, "timestamp"):
                return int(newest.timestamp() * 1000)
    except Exception:
        LOG.debug("no created_at in %s", pair.model_dir, exc_info=True)
    return None


def pair_corpus(pair) -> PairCorpus:
    """The `PairCorpus` of a loaded `ModelPair` (read once from its `articles.parquet`, then cached)."""
    corpus = _PAIR_CORPORA.get(pair)
    if corpus is not None:
        return corpus
    with _PAIR_LOCK:
        corpus = _PAIR_CORPORA.get(pair)
        if corpus is None:
            corpus = _load_pair_corpus(pair)
            _PAIR_CORPORA[pair] = corpus
    return corpus


def _load_pair_corpus(pair) -> PairCorpus:
    import pyarrow.parquet as pq

    ids = pair.article_ids
    row_of = {a: r for r, a in enumerate(ids)}
    attributes = {a: [features.MISSING_ATTRIBUTE] * len(ids) for a in features.ARTICLE_ATTRIBUTES}
    path = pair.model_dir / features.CORPUS_FILE
    if path.exists():
        names = pq.read_schema(path).names
        wanted = [a for a in features.ARTICLE_ATTRIBUTES if a in names]
        if wanted and "article_id" in names:
            table = pq.read_table(path, columns=["article_id", *wanted]).to_pydict()
            for i, article_id in enumerate(table["article_id"]):
                row = row_of.get(article_id)
                if row is not None:
                    for a in wanted:
                        value = table[a][i]
                        if value is not None:
                            attributes[a][row] = str(value)
    regions = attributes["region"] if "region" in attributes else [features.MISSING_ATTRIBUTE] * len(ids)
    names_list = sorted(set(regions))
    code = {name: i for i, name in enumerate(names_list)}
    codes = np.fromiter((code[r] for r in regions), dtype=np.int32, count=len(regions))
    return PairCorpus(row_of, attributes, names_list, code, codes, model_as_of_ms(pair))


def region_index(pair):
    """The pair's `filtered_search.RegionIndex` (built on the first filtered request)."""
    corpus = pair_corpus(pair)
    if corpus.region_index is None:
        with corpus.lock:
            if corpus.region_index is None:
                from serving.filtered_search import RegionIndex

                from serving.model_files import ARTICLE_VECTORS_FILE

                vectors = np.load(pair.model_dir / ARTICLE_VECTORS_FILE, mmap_mode="r")
                corpus.region_index = RegionIndex(pair.index, vectors, corpus.region_codes)
    return corpus.region_index


def article_tower(pair):
    """The served SavedModel's `article_vectors` signature (raises ValueError when it has none)."""
    from trainer.model_dir import ARTICLE_SIGNATURE

    corpus = pair_corpus(pair)
    if corpus.article_tower is None:
        loaded = getattr(pair.encoder, "_loaded", None)  # the SavedModel UserEncoder loaded
        signatures = getattr(loaded, "signatures", {})
        if ARTICLE_SIGNATURE not in signatures:
            raise ValueError(f"model {pair.version} has no '{ARTICLE_SIGNATURE}' signature: cannot embed new listings")
        corpus.article_tower = signatures[ARTICLE_SIGNATURE]
    return corpus.article_tower


def embed_articles(pair, records: Sequence[ArticleRecord]) -> np.ndarray:
    """Vectors of `records` from the model's article tower: `float32 [len(records), d]`."""
    import tensorflow as tf

    from trainer.model_dir import ARTICLE_INPUTS, ARTICLE_OUTPUT

    if not records:
        return np.zeros((0, pair.index.d), dtype=np.float32)
    columns = [[r.article_id for r in records]]
    columns += [[r.attributes()[i] for r in records] for i in range(len(features.ARTICLE_ATTRIBUTES))]
    inputs = {key: tf.constant(values, tf.string) for key, values in zip(ARTICLE_INPUTS, columns)}
    vectors = article_tower(pair)(**inputs)[ARTICLE_OUTPUT].numpy().astype(np.float32)
    if vectors.shape != (len(records), pair.index.d) or not np.isfinite(vectors).all():
        raise ValueError(f"model {pair.version}'s article tower answered {vectors.shape} / non-finite values")
    return vectors


@dataclass(frozen=True, eq=False)
class LiveOverlay:
    """One served model's view of the live records (immutable; rebuilt on change)."""

    pair: Any
    corpus: PairCorpus
    records: dict[str, ArticleRecord]  # the records that apply to this model
    dead_rows: np.ndarray  # model rows hidden by a newer record, sorted int64
    side_ids: list[str]
    side_vectors: np.ndarray  # float32 [m, d]
    side_regions: list[str]
    vector_cache: dict[tuple, np.ndarray]

    @property
    def n_main(self) -> int:
        return self.pair.n_articles

    def article_id(self, row: int) -> str:
        return self.pair.article_ids[row] if row < self.n_main else self.side_ids[row - self.n_main]

    def title(self, row: int) -> str | None:
        if row < self.n_main:
            return self.pair.titles[row] if self.pair.titles is not None else None
        return self.records[self.side_ids[row - self.n_main]].title

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
        return i < self.dead_rows.size and self.dead_rows[i] == row


def build_overlay(pair, records: Mapping[str, ArticleRecord], cache: dict | None = None) -> LiveOverlay:
    """The overlay of `records` for `pair`: tombstones and side rows.

    `cache` maps `(article_id, attributes)` to the pair's vector for it: entries found there are
    not embedded again, new ones are added, entries of listings no longer served are dropped.
    """
    corpus = pair_corpus(pair)
    as_of = corpus.as_of_ms
    applying = {a: r for a, r in records.items() if as_of is None or r.updated_ms > as_of}
    dead = sorted(corpus.row_of[a] for a in applying if a in corpus.row_of)
    active = [r for r in applying.values() if r.active]
    cache = {} if cache is None else cache
    keys = [(r.article_id, r.attributes()) for r in active]
    missing = [r for r, key in zip(active, keys) if key not in cache]
    if missing:
        try:
            for record, vector in zip(missing, embed_articles(pair, missing)):
                cache[(record.article_id, record.attributes())] = vector
        except Exception as error:  # tombstones must still apply; new listings wait for a model that can embed
            LOG.error("model %s cannot embed %d new listing(s), they are not served: %s", pair.version, len(missing), error)
            active = [r for r, key in zip(active, keys) if key in cache]
            keys = [(r.article_id, r.attributes()) for r in active]
    for stale in set(cache) - set(keys):
        del cache[stale]
    d = pair.index.d
    vectors = np.stack([cache[key] for key in keys]) if keys else np.zeros((0, d), np.float32)
    return LiveOverlay(
        pair=pair,
        corpus=corpus,
        records=applying,
        dead_rows=np.asarray(dead, dtype=np.int64),
        side_ids=[r.article_id for r in active],
        side_vectors=np.ascontiguousarray(vectors, dtype=np.float32),
        side_regions=[r.region or features.MISSING_ATTRIBUTE for r in active],
        vector_cache=cache,
    )


class LiveCorpus:
    """The process's live records (from `log`) and the overlay for the model being served.

    Writers (`upsert`, `sync`) apply changes to `records`, then `refresh` the overlay: a writer's
    call returns only once an overlay holding its change is published (read-your-write). Builds
    are serialised and each takes every change applied before it started, so a burst of writes
    costs a few builds, not one each. Readers (`overlay`) never wait for a build, except for the
    first one of a newly loaded model (which starts from its own corpus plus the records after
    its as_of).
    """

    def __init__(self, log):
        self.log = log
        self.records: dict[str, ArticleRecord] = {}
        self.seq = 0
        self._overlay: LiveOverlay | None = None
        self._version = 0  # bumped on every change to `records`
        self._overlay_version = -1
        self._lock = threading.Lock()  # guards records / version
        self._build_lock = threading.Lock()  # one overlay build at a time
        self._caches: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()  # per model: vectors

    def upsert(self, records: Sequence[ArticleRecord], pair=None) -> None:
        """Stores `records` (log first: nothing is served that was not stored) and applies them.

        With `pair`, the active ones are embedded first: a model that cannot embed them refuses
        the change (ValueError) before anything is stored.
        """
        vectors = {}
        if pair is not None:
            fresh = [r for r in records if r.active]
            vectors = {(r.article_id, r.attributes()): v for r, v in zip(fresh, embed_articles(pair, fresh))}
        self.log.put(records)
        if pair is not None:
            with self._build_lock:
                self._cache_for(pair).update(vectors)  # the rebuild reuses them
        self._apply(records)
        if pair is not None:
            self.refresh(pair)

    def _cache_for(self, pair) -> dict:
        cache = self._caches.get(pair)
        if cache is None:
            cache = self._caches[pair] = {}
        return cache

    def _apply(self, records: Iterable[ArticleRecord]) -> None:
        with self._lock:
            changed = False
            for record in records:
                current = self.records.get(record.article_id)
                if current is None or current.updated_ms <= record.updated_ms:
                    self.records[record.article_id] = record
                    changed = True
            if changed:
                self._version += 1

    def sync(self, pair=None) -> int:
        """Applies changes from the log since the last sync (and refreshes `pair`'s overlay)."""
        records, seq = self.log.changes_since(self.seq)
        self._apply(records)
        self.seq = max(self.seq, seq)
        if pair is not None:
            self.refresh(pair)
        return len(records)

    def refresh(self, pair) -> LiveOverlay:
        """The overlay of `pair` holding every change applied so far (built if needed)."""
        with self._build_lock:
            overlay = self._overlay
            if overlay is not None and overlay.pair is pair and self._overlay_version == self._version:
                return overlay
            with self._lock:
                version, records = self._version, dict(self.records)
            started = time.perf_counter()
            overlay = build_overlay(pair, records, self._cache_for(pair))
            self._overlay, self._overlay_version = overlay, version
            LOG.debug(
                "live corpus for model %s: %d new listing(s), %d model row(s) hidden, built in %.1f ms",
                pair.version, len(overlay.side_ids), overlay.dead_rows.size, (time.perf_counter() - started) * 1000,
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
