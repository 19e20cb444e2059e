"""The online store of user histories: what the service asks for each request.

Two implementations of one interface, `get(user_id) -> history row or None`:

* `EmbeddedStore`: the `user_histories.parquet` snapshot (features.USER_HISTORY_COLUMNS) held in
  memory. The default for local runs; the snapshot is the extract's file, or the copy a publish
  root carries in each version (`versions/<v>/user_histories.parquet`).
* `RedisStore`: one Redis string per user, `<prefix><user_id>` -> JSON of the history columns,
  filled from the same snapshot by `load_histories_to_redis` (`candidates load-histories`). In
  production a stream job keeps the keys fresh; the snapshot load bootstraps them.

A history row is a dict with `history` (article ids, most recent first), the parallel
`history_<attr>` lists and, when the user searched, `recent_queries` (most recent first):
exactly what `trainer.towers.serving_model.UserEncoder.encode` takes. Beside them, `seen` (when the
snapshot has it): every article the user viewed, most recent first, at most
`features.SEEN_LENGTH`: what `seen_set` gives the "already viewed" filter (evaluation excludes the
same set).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Protocol

import orjson

from homefeed import features
from homefeed.layout import extract_dir as extract_layout

LOG = logging.getLogger(__name__)

HistoryRow = dict[str, list[str]]
HISTORY_COLUMNS: tuple[str, ...] = features.HISTORY_COLUMNS
DEFAULT_REDIS_PREFIX = "homefeed:history:"
# Deliberately not under DEFAULT_REDIS_PREFIX, so no user id can collide with it.
META_KEY_SUFFIX = "snapshot-meta"


class StoreUnavailableError(RuntimeError):
    """The store could not be asked (e.g. Redis down or too slow); the caller falls back."""


# Records this process found unreadable and skipped, by store (the app exports them on /metrics as
# candidates_corrupt_records_total); each key is logged once (at most MAX_REPORTED keys).
CORRUPT_RECORDS: dict[str, int] = {}
MAX_REPORTED = 10_000
_reported: set[tuple[str, str]] = set()


def report_corrupt(store: str, key: str, problem: str) -> None:
    """Counts a record of `store` that cannot be read and is skipped; logs it the first time."""
    CORRUPT_RECORDS[store] = CORRUPT_RECORDS.get(store, 0) + 1
    if (store, key) not in _reported and len(_reported) < MAX_REPORTED:
        _reported.add((store, key))
        LOG.warning("skipping an unreadable record in %s at %r: %s", store, key[:200], problem[:200])


class HistoryStore(Protocol):
    """Where the service reads user histories."""

    description: str

    def get(self, user_id: str) -> HistoryRow | None:
        """The user's latest history, or None for a user the store does not know.

        Raises:
          StoreUnavailableError: the store could not answer.
        """

    def close(self) -> None: ...


def read_histories(path: str | os.PathLike, batch_size: int = 10_000) -> Iterator[tuple[str, HistoryRow]]:
    """Yields `(user_id, history row)` from a `user_histories.parquet` snapshot, in bounded batches.

    Missing attribute columns become empty lists (the encoder fills them with
    `features.MISSING_ATTRIBUTE`); a null history is an empty one.

    Raises:
      FileNotFoundError: no file at `path`.
      ValueError: the file lacks `user_id` or `history`, or is not Parquet.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"user histories {path} not found (the extract's {extract_layout.USER_HISTORIES_FILE})")
    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a non-Parquet file
        raise ValueError(f"user histories {path} is not a readable Parquet file: {error}") from None
    names = set(parquet.schema_arrow.names)
    missing = [c for c in (features.USER_ID, features.HISTORY) if c not in names]
    if missing:
        raise ValueError(f"user histories {path} lacks column(s) {missing}; it has {sorted(names)}")
    columns = [features.USER_ID, *(c for c in HISTORY_COLUMNS if c in names)]
    # Recent searches ride along when the snapshot has them (an extract with a searches table).
    with_queries = features.RECENT_QUERIES in names
    if with_queries:
        columns.append(features.RECENT_QUERIES)
    with_seen = features.SEEN in names
    if with_seen:
        columns.append(features.SEEN)
    for batch in parquet.iter_batches(batch_size=batch_size, columns=columns):
        data = batch.to_pydict()
        for i, user_id in enumerate(data[features.USER_ID]):
            if user_id is None:
                continue
            row = {c: list(data[c][i] or []) if c in data else [] for c in HISTORY_COLUMNS}
            if with_queries and data[features.RECENT_QUERIES][i]:
                row[features.RECENT_QUERIES] = list(data[features.RECENT_QUERIES][i])
            if with_seen and data[features.SEEN][i]:
                row[features.SEEN] = list(data[features.SEEN][i])[: features.SEEN_LENGTH]
            yield str(user_id), row


def seen_set(row: HistoryRow | None) -> set[str]:
    """Every article the user viewed as far as the row knows: its `seen` list (the last
    features.SEEN_LENGTH distinct articles) and its history."""
    if not row:
        return set()
    return set(row.get(features.SEEN) or ()) | set(row.get(features.HISTORY) or ())


def snapshot_as_of_ms(path: str | os.PathLike) -> int | None:
    """When a `user_histories.parquet` snapshot was cut, in ms since the epoch (None if unknown).

    The extract's `extract_summary.json` beside it says (`as_of`); otherwise the newest
    `last_viewed_at` in the file. Live views newer than this are merged in front of it.
    """
    import json

    path = Path(path)
    summary = path.parent / extract_layout.SUMMARY_FILE
    try:
        as_of = json.loads(summary.read_text()).get("as_of")
        if as_of:
            from datetime import datetime

            parsed = datetime.fromisoformat(str(as_of).replace("Z", "+00:00"))
            return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp() * 1000)
    except (OSError, ValueError, AttributeError):
        pass
    try:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        if "last_viewed_at" not in pq.ParquetFile(path).schema_arrow.names:
            return None
        newest = pc.max(pq.read_table(path, columns=["last_viewed_at"]).column(0)).as_py()
    except Exception:  # an unreadable column only means "as_of unknown"
        LOG.debug("no last_viewed_at in %s", path, exc_info=True)
        return None
    return None if newest is None else int(newest.timestamp() * 1000)


class EmbeddedStore:
    """All histories of a snapshot in a dict; `get` is a dictionary lookup.

    `as_of_ms`: when the snapshot was cut (see `snapshot_as_of_ms`); None if unknown.
    """

    def __init__(self, histories: dict[str, HistoryRow], description: str = "in-memory", as_of_ms: int | None = None):
        self._histories = histories
        self.description = description
        self.as_of_ms = as_of_ms

    @classmethod
    def from_parquet(cls, path: str | os.PathLike) -> EmbeddedStore:
        started = time.perf_counter()
        histories: dict[str, HistoryRow] = {}
        duplicates = 0
        for user_id, row in read_histories(path):
            duplicates += user_id in histories
            histories[user_id] = row
        if duplicates:
            LOG.warning("%s: %d duplicate user id(s); the last row of each wins", path, duplicates)
        LOG.info("loaded %d user histories from %s in %.1fs", len(histories), path, time.perf_counter() - started)
        return cls(histories, description=f"embedded snapshot {path}", as_of_ms=snapshot_as_of_ms(path))

    def __len__(self) -> int:
        return len(self._histories)

    def user_ids(self) -> list[str]:
        return list(self._histories)

    def get(self, user_id: str) -> HistoryRow | None:
        return self._histories.get(user_id)

    def close(self) -> None:
        pass


def encode_row(row: HistoryRow) -> bytes:
    value = {c: row.get(c, []) for c in HISTORY_COLUMNS}
    if row.get(features.RECENT_QUERIES):  # only users who searched carry the key
        value[features.RECENT_QUERIES] = row[features.RECENT_QUERIES]
    if row.get(features.SEEN):
        value[features.SEEN] = row[features.SEEN]
    return orjson.dumps(value)


def decode_row(value: bytes, where: str = "the stored value") -> HistoryRow:
    """A stored history row. Raises StoreUnavailableError (naming `where`) for a value this
    project did not write, so a request falls back instead of failing."""
    try:
        row = orjson.loads(value)
        if not isinstance(row, dict) or not all(isinstance(row.get(c) or [], list) for c in HISTORY_COLUMNS):
            raise ValueError(f"not an object of lists {list(HISTORY_COLUMNS)}")
        queries = row.get(features.RECENT_QUERIES)
        if queries is not None and not (isinstance(queries, list) and all(isinstance(q, str) for q in queries)):
            raise ValueError(f"{features.RECENT_QUERIES} is not a list of strings")
        seen = row.get(features.SEEN)
        if seen is not None and not (isinstance(seen, list) and all(isinstance(a, str) for a in seen)):
            raise ValueError(f"{features.SEEN} is not a list of strings")
    except ValueError as error:
        raise StoreUnavailableError(f"{where} is not a history row ({str(error)[:100]})") from None
    decoded = {c: list(row.get(c) or []) for c in HISTORY_COLUMNS}
    if queries:
        decoded[features.RECENT_QUERIES] = list(queries)
    if seen:
        decoded[features.SEEN] = list(seen)
    return decoded


def _client(url: str, timeout_s: float):
    import redis

    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=max(timeout_s, 1.0))


class RedisStore:
    """Histories in Redis: one GET per request.

    Args:
      url: e.g. `redis://127.0.0.1:6379/0`.
      prefix: key prefix; the user's key is `prefix + user_id`.
      timeout_s: socket timeout of one GET; a slower Redis counts as unavailable (the request
        then falls back instead of blowing the latency budget).
    """

    def __init__(self, url: str, prefix: str = DEFAULT_REDIS_PREFIX, timeout_s: float = 0.05):
        self.url = url
        self.prefix = prefix
        self.description = f"redis {_redact(url)} prefix {prefix!r}"
        self._redis = _client(url, timeout_s)

    def ping(self) -> None:
        """Raises StoreUnavailableError when the server cannot be reached."""
        import redis

        try:
            self._redis.ping()
        except redis.RedisError as error:
            raise StoreUnavailableError(f"cannot reach {self.description}: {error}") from error

    def get(self, user_id: str) -> HistoryRow | None:
        import redis

        try:
            value = self._redis.get(self.prefix + user_id)
        except redis.RedisError as error:
            raise StoreUnavailableError(f"{self.description}: {error}") from error
        return None if value is None else decode_row(value, f"{self.description}: key {self.prefix + user_id!r}")

    def get_with(self, user_id: str, other_key: str) -> tuple[HistoryRow | None, bytes | None]:
        """The user's snapshot row and the raw value of `other_key` (e.g. live views), one MGET."""
        import redis

        try:
            value, other = self._redis.mget(self.prefix + user_id, other_key)
        except redis.RedisError as error:
            raise StoreUnavailableError(f"{self.description}: {error}") from error
        return (
            None if value is None else decode_row(value, f"{self.description}: key {self.prefix + user_id!r}")
        ), other

    def snapshot_meta(self) -> dict | None:
        value = self._redis.get(self.prefix.rstrip(":") + "-" + META_KEY_SUFFIX)
        return None if value is None else orjson.loads(value)

    @property
    def as_of_ms(self) -> int | None:
        """The loaded snapshot's as_of (from its meta key), re-read at most every few seconds."""
        import redis

        now = time.monotonic()
        cached = getattr(self, "_as_of_cache", None)
        if cached is not None and now - cached[0] < 5.0:
            return cached[1]
        try:
            meta = self.snapshot_meta() or {}
        except redis.RedisError:
            return cached[1] if cached else None
        as_of = meta.get("as_of_ms")
        self._as_of_cache = (now, as_of)
        return as_of

    def close(self) -> None:
        self._redis.close()


def _redact(url: str) -> str:
    """The URL without a password (user-info or query string), for logs and messages."""
    from homefeed.redact import redact

    return redact(url)


def load_histories_to_redis(
    path: str | os.PathLike,
    url: str,
    prefix: str = DEFAULT_REDIS_PREFIX,
    batch_size: int = 1000,
    ttl_seconds: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Writes every user of a snapshot to Redis (`prefix + user_id` -> JSON); returns the count.

    Writes go in pipelined, non-transactional batches of `batch_size` SETs (one round trip each).
    Keys of users missing from the snapshot are left alone (a stream writer may own them); pass
    `ttl_seconds` to let stale users expire. A meta key records what was loaded and when.

    Raises:
      FileNotFoundError / ValueError: as `read_histories`.
      StoreUnavailableError: Redis cannot be reached or refuses a write.
    """
    import redis

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    rows = read_histories(path)
    client = _client(url, timeout_s=10.0)
    written = 0
    started = time.perf_counter()
    try:
        client.ping()
        pipe = client.pipeline(transaction=False)
        for user_id, row in rows:
            pipe.set(prefix + user_id, encode_row(row), ex=ttl_seconds)
            written += 1
            if written % batch_size == 0:
                pipe.execute()
                if progress:
                    progress(written)
        pipe.execute()
        meta = {
            "source": str(Path(path).resolve()),
            "users": written,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "prefix": prefix,
            "as_of_ms": snapshot_as_of_ms(path),
        }
        client.set(prefix.rstrip(":") + "-" + META_KEY_SUFFIX, orjson.dumps(meta))
    except redis.RedisError as error:
        raise StoreUnavailableError(
            f"loading histories into {_redact(url)} failed after {written} users: {error}"
        ) from error
    finally:
        client.close()
    if progress:
        progress(written)
    LOG.info("wrote %d user histories to %s in %.1fs", written, _redact(url), time.perf_counter() - started)
    return written
