"""Live listings: the record of a listing's latest state, and where records are kept.

* `ArticleRecord`: one listing's latest state (`PUT /v1/articles/{id}`, `sync-articles`);
  `parse_article` checks a body field by field.
* `EmbeddedArticleLog` / `RedisArticleLog`: where records live. Redis keeps them in a hash with a
  change log (a sorted set scored by a global sequence number, written atomically by one Lua
  script), so every replica, and a restarted one, reads the same changes in the same order.

What a served model makes of the records is serving/live/corpus.py.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from homefeed import features
from homefeed.redact import preview
from serving.live.items import check_size, parse_timestamp
from serving.store import StoreUnavailableError, _client, _redact, report_corrupt

LOG = logging.getLogger(__name__)

ACTIVE = "active"
REMOVED = ("sold", "deleted")
ARTICLE_FIELDS = ("title", "category", "region", "status", "created_at")
MAX_TEXT = 1000
# created_at is read again by the article tower's inputs (pandas timestamps: years 1678-2261).
CREATED_AT_RANGE_MS = (-2_208_988_800_000, 7_258_118_400_000)  # 1900-01-01 .. 2200-01-01 UTC


class ArticleError(ValueError):
    """An article body is invalid; `details` lists `{where, problem, got}`."""

    def __init__(self, details: list[dict[str, Any]]):
        super().__init__("; ".join(f"{d['where']}: {d['problem']}" for d in details))
        self.details = details


@dataclass(frozen=True)
class ArticleRecord:
    """A listing's latest live state. `updated_ms`: when the change was accepted (ms, UTC).

    `removed_at`: when it was sold or deleted (ISO 8601 UTC, the service's clock when the change
    was accepted; None while it is up), the articles table's `removed_at` (homefeed/features.py),
    so a listing's lifetime is kept, not inferred from its views.
    """

    article_id: str
    title: str | None = None
    category: str | None = None
    region: str | None = None
    status: str = ACTIVE
    created_at: str | None = None
    updated_ms: int = 0
    removed_at: str | None = None

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    def attributes(self) -> tuple[str, ...]:
        """Values of `features.ARTICLE_ATTRIBUTES` (missing ones as `features.MISSING_ATTRIBUTE`)."""
        return tuple(getattr(self, a, None) or features.MISSING_ATTRIBUTE for a in features.ARTICLE_ATTRIBUTES)

    def to_json(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @classmethod
    def from_json(cls, value: bytes | str) -> ArticleRecord:
        """The record `to_json` wrote. Raises ValueError for anything else (not JSON, wrong types)."""
        data = orjson.loads(value)  # JSONDecodeError is a ValueError
        if not isinstance(data, dict):
            raise ValueError(f"a record is a JSON object, got {type(data).__name__}")
        kept = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if not isinstance(kept.get("article_id"), str) or not kept["article_id"]:
            raise ValueError("article_id is missing or not a string")
        if kept.get("status", ACTIVE) not in (ACTIVE, *REMOVED):
            raise ValueError(f"status {preview(kept.get('status'))} is not one of {[ACTIVE, *REMOVED]}")
        if not isinstance(kept.get("updated_ms", 0), int) or isinstance(kept.get("updated_ms"), bool):
            raise ValueError("updated_ms is not an integer")
        for name in ("title", "category", "region", "created_at"):
            if not isinstance(kept.get(name), (str, type(None))):
                raise ValueError(f"{name} is not a string or null")
        return cls(**kept)


def parse_article(article_id: str, body: Any, now_ms: int | None = None) -> ArticleRecord:
    """A `PUT /v1/articles/{id}` body -> record. Every field is optional; status defaults to active.

    Raises:
      ArticleError: with one detail per bad field.
    """
    if not isinstance(body, Mapping):
        raise ArticleError([{"where": "body", "problem": "must be a JSON object", "got": type(body).__name__}])
    try:
        check_size(body)  # first: nothing below reads a value of unbounded size
    except ValueError as error:
        raise ArticleError([{"where": "body", "problem": str(error), "got": None}]) from None
    details = []
    unknown = sorted(set(body) - set(ARTICLE_FIELDS) - {"article_id"})
    if unknown:
        details.append(
            {"where": "body", "problem": f"unknown field(s) {unknown}; allowed: {list(ARTICLE_FIELDS)}", "got": unknown}
        )
    if "article_id" in body and body["article_id"] != article_id:
        details.append(
            {
                "where": "body.article_id",
                "problem": "differs from the id in the URL",
                "got": preview(body["article_id"]),
            }
        )
    values: dict[str, Any] = {}
    for name in ("title", "category", "region"):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
            details.append(
                {
                    "where": f"body.{name}",
                    "problem": f"must be a string of at most {MAX_TEXT} characters or null",
                    "got": preview(value),
                }
            )
        values[name] = value
    status = body.get("status", ACTIVE)
    if status not in (ACTIVE, *REMOVED):
        details.append(
            {"where": "body.status", "problem": f"must be one of {[ACTIVE, *REMOVED]}", "got": preview(status)}
        )
    created_at = body.get("created_at")
    if created_at is not None:
        try:
            created_ms = parse_timestamp(created_at, "created_at")
            if not CREATED_AT_RANGE_MS[0] <= created_ms < CREATED_AT_RANGE_MS[1]:
                raise ValueError("created_at must be between 1900-01-01 and 2200-01-01")
        except ValueError as error:
            details.append({"where": "body.created_at", "problem": str(error), "got": preview(created_at)})
    if details:
        raise ArticleError(details)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return ArticleRecord(
        article_id,
        status=status,
        created_at=created_at,
        updated_ms=now_ms,
        removed_at=None if status == ACTIVE else iso_ms(now_ms),
        **values,
    )


def iso_ms(ms: int) -> str:
    """`ms` since the epoch as ISO 8601 UTC with milliseconds (`2026-05-01T12:00:00.000Z`)."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------
# Where records live.
# ---------------------------------------------------------------------------------------------
class EmbeddedArticleLog:
    """Records in this process only (no Redis configured)."""

    description = "in-process live articles"
    in_process = True  # a put is a dict update, never a network call (see LiveCorpus.writes_inline)

    def __init__(self, journal=None):
        self._records: dict[str, tuple[int, ArticleRecord]] = {}
        self._seq = 0
        self._lock = threading.Lock()
        # serving/live/durable.py: every put is committed there first, and read back at start.
        self.journal = journal
        if journal is not None:
            self.description = f"in-process live articles, kept in {journal.description}"
            for article_id, seq, value in journal.articles():  # by seq: the dict stays in seq order
                try:
                    self._records[article_id] = (seq, ArticleRecord.from_json(value))
                except ValueError as error:
                    report_corrupt(journal.description + " articles", article_id, str(error))
                self._seq = max(self._seq, seq)

    def put(self, records: Sequence[ArticleRecord]) -> int:
        with self._lock:
            if self.journal is not None:
                rows = [(r.article_id, self._seq + i + 1, r.to_json()) for i, r in enumerate(records)]
                try:
                    self.journal.put_articles(rows)
                except Exception as error:
                    raise StoreUnavailableError(
                        f"{self.journal.description} did not take the listing change: {error}"
                    ) from error
            for record in records:
                self._seq += 1
                self._records.pop(record.article_id, None)  # re-inserted last: the dict stays in seq order
                self._records[record.article_id] = (self._seq, record)
            return self._seq

    def changes_since(self, seq: int) -> tuple[list[ArticleRecord], int]:
        """Records changed after `seq`, oldest first: read from the newest end, O(changes) (the
        sync loop asks four times a second; a scan of every record held was O(records))."""
        with self._lock:
            newer = list(itertools.takewhile(lambda entry: entry[0] > seq, reversed(self._records.values())))
            return [r for _, r in reversed(newer)], self._seq

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()


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

    in_process = False  # a put is a round trip that may take up to the client's timeout

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

    def exists(self, article_id: str) -> bool:
        return bool(self._redis.hexists(self.hash_key, article_id))

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
        records = []
        for (member, _), value in zip(changed, values):
            if value is None:
                continue
            try:
                records.append(ArticleRecord.from_json(value))
            except ValueError as error:  # skipped, counted, logged once: later changes still apply
                report_corrupt(self.hash_key, member.decode(errors="replace"), str(error))
        return records, int(max(score for _, score in changed))

    def close(self) -> None:
        self._redis.close()


def article_features(records: Sequence[ArticleRecord], now_ms: float) -> dict:
    """The raw `article_vectors` inputs of `records` with ages at `now_ms`: made by
    trainer/towers/article_inputs.py, exactly as the pipeline's export makes the corpus's (a record
    without `created_at` has an unknown age, as a corpus row without one)."""
    from trainer.towers import article_inputs

    return article_inputs.raw_article_features(
        [r.article_id for r in records],
        {a: [getattr(r, a, None) for r in records] for a in features.ARTICLE_ATTRIBUTES},
        [r.title for r in records],
        [r.created_at for r in records],
        now_ms,
    )


def removal(article_id: str, status: str = "deleted", now_ms: int | None = None) -> ArticleRecord:
    """The record `DELETE /v1/articles/{id}` stores (a tombstone, removed at `now_ms`)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return ArticleRecord(article_id, status=status, updated_ms=now_ms, removed_at=iso_ms(now_ms))
