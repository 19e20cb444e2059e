"""The live corpus: listings created, changed, sold or deleted since the served model was built.

Conventions of vector stores (Vertex AI Vector Search, Qdrant, Milvus): an upsert is idempotent by
id and visible to the next query; a removal is a tombstone filtered at query time until the next
rebuild (the next published model) compacts it.

* `ArticleRecord`: one listing's latest state (`PUT /v1/articles/{id}`, `sync-articles`).
* `EmbeddedArticleLog` / `RedisArticleLog`: where records live. Redis keeps them in a hash with a
  change log (a sorted set scored by a global sequence number, written atomically by one Lua
  script), so every replica, and a restarted one, reads the same changes in the same order.
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
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson

from homefeed import features
from serving.live_events import parse_timestamp
from serving.store import StoreUnavailableError, _client, _redact

LOG = logging.getLogger(__name__)

ACTIVE = "active"
REMOVED = ("sold", "deleted")
ARTICLE_FIELDS = ("title", "category", "region", "status", "created_at")
MAX_TEXT = 1000


class ArticleError(ValueError):
    """An article body is invalid; `details` lists `{where, problem, got}`."""

    def __init__(self, details: list[dict[str, Any]]):
        super().__init__("; ".join(f"{d['where']}: {d['problem']}" for d in details))
        self.details = details


@dataclass(frozen=True)
class ArticleRecord:
    """A listing's latest live state. `updated_ms`: when the change was accepted (ms, UTC)."""

    article_id: str
    title: str | None = None
    category: str | None = None
    region: str | None = None
    status: str = ACTIVE
    created_at: str | None = None
    updated_ms: int = 0

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    def attributes(self) -> tuple[str, ...]:
        """Values of `features.ARTICLE_ATTRIBUTES` (missing ones as `features.MISSING_ATTRIBUTE`)."""
        return tuple(getattr(self, a, None) or features.MISSING_ATTRIBUTE for a in features.ARTICLE_ATTRIBUTES)

    def to_json(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @classmethod
    def from_json(cls, value: bytes | str) -> "ArticleRecord":
        data = orjson.loads(value)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def parse_article(article_id: str, body: Any, now_ms: int | None = None) -> ArticleRecord:
    """A `PUT /v1/articles/{id}` body -> record. Every field is optional; status defaults to active.

    Raises:
      ArticleError: with one detail per bad field.
    """
    if not isinstance(body, Mapping):
        raise ArticleError([{"where": "body", "problem": "must be a JSON object", "got": type(body).__name__}])
    details = []
    unknown = sorted(set(body) - set(ARTICLE_FIELDS) - {"article_id"})
    if unknown:
        details.append({"where": "body", "problem": f"unknown field(s) {unknown}; allowed: {list(ARTICLE_FIELDS)}", "got": unknown})
    if "article_id" in body and body["article_id"] != article_id:
        details.append({"where": "body.article_id", "problem": "differs from the id in the URL", "got": body["article_id"]})
    values: dict[str, Any] = {}
    for name in ("title", "category", "region"):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
            details.append({"where": f"body.{name}", "problem": f"must be a string of at most {MAX_TEXT} characters or null", "got": str(value)[:100]})
        values[name] = value
    status = body.get("status", ACTIVE)
    if status not in (ACTIVE, *REMOVED):
        details.append({"where": "body.status", "problem": f"must be one of {[ACTIVE, *REMOVED]}", "got": str(status)[:100]})
    created_at = body.get("created_at")
    if created_at is not None:
        try:
            parse_timestamp(created_at, "created_at")
        except ValueError as error:
            details.append({"where": "body.created_at", "problem": str(error), "got": str(created_at)[:100]})
    if details:
        raise ArticleError(details)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return ArticleRecord(article_id, status=status, created_at=created_at, updated_ms=now_ms, **values)


# ---------------------------------------------------------------------------------------------
# Where records live.
# ---------------------------------------------------------------------------------------------
class EmbeddedArticleLog:
    """Records in this process only (no Redis configured)."""

    description = "in-process live articles"

    def __init__(self):
        self._records: dict[str, tuple[int, ArticleRecord]] = {}
        self._seq = 0
        self._lock = threading.Lock()

    def put(self, records: Sequence[ArticleRecord]) -> int:
        with self._lock:
            for record in records:
                self._seq += 1
                self._records[record.article_id] = (self._seq, record)
            return self._seq

    def changes_since(self, seq: int) -> tuple[list[ArticleRecord], int]:
        with self._lock:
            return [r for s, r in self._records.values() if s > seq], self._seq

    def close(self) -> None:
        pass


# KEYS: seq counter, records hash, change log zset. ARGV: id1, json1, id2, json2, ...
_PUT_SCRIPT = """
local seq = 0
for i = 1, #ARGV, 2 do
  seq = redis.call('INCR', KEYS[1])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[3], seq, ARGV[i])
end
return seq
"""


class RedisArticleLog:
    """Records in Redis: `<base>-articles` hash id -> JSON, `<base>-articles-log` zset id by change seq."""

    def __init__(self, url: str, history_prefix: str, timeout_s: float = 2.0):
        base = history_prefix.rstrip(":")
        self.seq_key, self.hash_key, self.log_key = f"{base}-articles-seq", f"{base}-articles", f"{base}-articles-log"
        self.description = f"redis {_redact(url)} {self.hash_key!r}"
        self._redis = _client(url, timeout_s)
        self._put = self._redis.register_script(_PUT_SCRIPT)

    def put(self, records: Sequence[ArticleRecord]) -> int:
        import redis

        args: list[Any] = []
        for record in records:
            args += [record.article_id, record.to_json()]
        try:
            return int(self._put(keys=[self.seq_key, self.hash_key, self.log_key], args=args)) if args else 0
        except redis.RedisError as error:
            raise StoreUnavailableError(f"writing live articles to {self.description} failed: {error}") from error

    def changes_since(self, seq: int) -> tuple[list[ArticleRecord], int]:
        """Records changed after `seq` and the highest seq seen (the log, never a separate counter)."""
        import redis

        try:
            changed = self._redis.zrangebyscore(self.log_key, f"({seq}", "+inf", withscores=True)
            if not changed:
                return [], seq
            values = self._redis.hmget(self.hash_key, [member for member, _ in changed])
        except redis.RedisError as error:
            raise StoreUnavailableError(f"reading live articles from {self.description} failed: {error}") from error
        records = [ArticleRecord.from_json(v) for v in values if v is not None]
        return records, int(max(score for _, score in changed))

    def close(self) -> None:
        self._redis.close()


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

                vectors = np.load(pair.model_dir / features_vectors_file(), mmap_mode="r")
                corpus.region_index = RegionIndex(pair.index, vectors, corpus.region_codes)
    return corpus.region_index


def features_vectors_file() -> str:
    from serving.model_files import ARTICLE_VECTORS_FILE

    return ARTICLE_VECTORS_FILE


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


def build_overlay(pair, records: Mapping[str, ArticleRecord], previous: LiveOverlay | None = None) -> LiveOverlay:
    """The overlay of `records` for `pair`: tombstones and side rows (vectors reused when unchanged)."""
    corpus = pair_corpus(pair)
    as_of = corpus.as_of_ms
    applying = {a: r for a, r in records.items() if as_of is None or r.updated_ms > as_of}
    dead = sorted(corpus.row_of[a] for a in applying if a in corpus.row_of)
    active = [r for r in applying.values() if r.active]
    cache = previous.vector_cache if previous is not None and previous.pair is pair else {}
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

    `upsert` applies a change here at once (the next request sees it) and writes it to the log;
    `sync` pulls changes other writers made; `overlay(pair)` rebuilds when the pair or the records
    changed (a new model version starts from its own corpus plus the records after its as_of).
    """

    def __init__(self, log):
        self.log = log
        self.records: dict[str, ArticleRecord] = {}
        self.seq = 0
        self._overlay: LiveOverlay | None = None
        self._version = 0  # bumped on every change to `records`
        self._overlay_version = -1
        self._lock = threading.RLock()

    def upsert(self, records: Sequence[ArticleRecord], pair=None) -> None:
        """Stores `records` (log first: nothing is served that was not stored) and applies them."""
        if pair is not None:
            fresh = [r for r in records if r.active]
            embed_articles(pair, fresh[:1])  # fail before storing when the model cannot embed at all
        self.log.put(records)
        self._apply(records)
        if pair is not None:
            self.overlay(pair)

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

    def sync(self) -> int:
        """Applies changes from the log since the last sync; returns how many records came."""
        records, seq = self.log.changes_since(self.seq)
        self._apply(records)
        self.seq = max(self.seq, seq)
        return len(records)

    def overlay(self, pair) -> LiveOverlay:
        overlay = self._overlay
        if overlay is not None and overlay.pair is pair and self._overlay_version == self._version:
            return overlay
        with self._lock:
            overlay = self._overlay
            if overlay is None or overlay.pair is not pair or self._overlay_version != self._version:
                version = self._version
                overlay = build_overlay(pair, dict(self.records), overlay)
                self._overlay, self._overlay_version = overlay, version
                if overlay.records:
                    LOG.info(
                        "live corpus for model %s: %d new listing(s), %d model row(s) hidden",
                        pair.version, len(overlay.side_ids), overlay.dead_rows.size,
                    )
        return overlay

    def get(self, article_id: str) -> ArticleRecord | None:
        return self.records.get(article_id)


def removal(article_id: str, status: str = "deleted", now_ms: int | None = None) -> ArticleRecord:
    """The record `DELETE /v1/articles/{id}` stores (a tombstone)."""
    return ArticleRecord(article_id, status=status, updated_ms=int(time.time() * 1000) if now_ms is None else now_ms)


def with_time(record: ArticleRecord, now_ms: int) -> ArticleRecord:
    return replace(record, updated_ms=now_ms)
