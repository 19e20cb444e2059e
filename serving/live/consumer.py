"""`candidates consume-events`: live views from a Redis Stream into the live history store.

The production path of live views: producers only `XADD` (one entry per event, either the item
JSON in an `event` field or its fields flat: `user_id`, `article_id`, `viewed_at`, `event_id`?,
`type`?). A consumer group reads the stream:

1. on start, this consumer's own pending entries (`XREADGROUP ... 0`): what it read but did not
   acknowledge before a crash;
2. entries a dead consumer left pending longer than `claim_idle_ms` (`XAUTOCLAIM`);
3. new entries (`XREADGROUP ... >`, blocking).

Each batch is written to the live views (serving/live/events.py, the same store the service
reads) and only then acknowledged (`XACK`). An entry read twice (crash between write and ack)
is harmless: every event has an idempotency key (`event_id`, else `viewed_at|article_id`), and a
stored key is never stored again. Invalid entries are copied with their reason to
`<stream>:rejected` and acknowledged, so one bad entry never blocks the stream.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from homefeed import features
from serving.live.events import RedisLiveViews, parse_item
from serving.store import DEFAULT_REDIS_PREFIX, StoreUnavailableError, _client, _redact

LOG = logging.getLogger(__name__)

DEFAULT_GROUP = "homefeed-live-views"
RETRY_S = 1.0
REJECTED_SUFFIX = ":rejected"


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class ConsumerStats:
    read: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    claimed: int = 0
    batches: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def decode_entry(fields: dict[bytes, bytes]) -> Any:
    """A stream entry's event item (from an `event` JSON field, or the fields themselves)."""
    if b"event" in fields:
        try:
            return orjson.loads(fields[b"event"])
        except orjson.JSONDecodeError as error:
            raise ValueError(f"the event field is not valid JSON: {error}") from None
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}


class EventConsumer:
    """One member of a consumer group on `stream` (see the module doc).

    Args:
      url: Redis URL (the service's --redis-url).
      stream: the stream key.
      group / consumer: consumer group and this member's name (a restarted consumer should keep
        its name to pick up its own pending entries at once; others reclaim them after
        `claim_idle_ms`).
      history_prefix: the service's --redis-prefix (live views are stored beside it).
      history_length: H, the live views kept per user.
      known_article: `article_id -> bool`, or None to accept any id.
    """

    def __init__(
        self,
        url: str,
        stream: str,
        group: str = DEFAULT_GROUP,
        consumer: str | None = None,
        history_prefix: str = DEFAULT_REDIS_PREFIX,
        history_length: int = features.HISTORY_LENGTH,
        batch_size: int = 500,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        known_article: Callable[[str], bool] | None = None,
    ):
        self.stream, self.group = stream, group
        self.consumer = consumer or default_consumer_name()
        self.batch_size, self.block_ms, self.claim_idle_ms = batch_size, block_ms, claim_idle_ms
        self.known_article = known_article
        self.views = RedisLiveViews(url, history_prefix, cap=history_length, timeout_s=max(5.0, block_ms / 1000 + 5))
        self.redis = _client(url, timeout_s=max(5.0, block_ms / 1000 + 5))
        self.description = f"{_redact(url)} stream {stream!r} group {group!r} as {self.consumer!r}"
        self.stats = ConsumerStats()

    def ensure_group(self) -> None:
        import redis

        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            LOG.info("created consumer group %r on %r (reads the stream from its start)", self.group, self.stream)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        except redis.RedisError as error:  # unreachable, wrong password: say so, the caller decides
            raise StoreUnavailableError(f"cannot use {self.description}: {error}") from None

    def process(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Writes the valid events of `entries`, dead-letters the invalid ones, then XACKs all."""
        if not entries:
            return
        views, rejected = [], []
        now_s = time.time()
        for entry_id, fields in entries:
            if fields is None:  # deleted from the stream while pending
                continue
            try:
                views.append(parse_item(decode_entry(fields), self.known_article, now_s))
            except ValueError as error:
                rejected.append((entry_id, str(error)))
        applied = self.views.add(views) if views else 0  # raises: nothing is acknowledged
        if rejected:
            pipe = self.redis.pipeline(transaction=False)
            for entry_id, reason in rejected:
                pipe.xadd(self.stream + REJECTED_SUFFIX, {"entry": entry_id, "reason": reason})
                LOG.warning("entry %s rejected: %s", entry_id.decode(), reason)
            pipe.execute()
        self.redis.xack(self.stream, self.group, *[entry_id for entry_id, _ in entries])
        s = self.stats
        s.read += len(entries)
        s.applied += applied
        s.duplicates += len(views) - applied
        s.rejected += len(rejected)
        s.batches += 1

    def _own_pending(self) -> list:
        answer = self.redis.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=self.batch_size)
        return answer[0][1] if answer else []

    def _claim(self) -> list:
        claimed, start = [], "0-0"
        while True:
            result = self.redis.xautoclaim(
                self.stream, self.group, self.consumer, self.claim_idle_ms, start_id=start, count=self.batch_size
            )
            start, entries = result[0], result[1]
            claimed += entries
            if start in (b"0-0", "0-0") or not entries:
                return claimed

    def run(self, stop: threading.Event | None = None, idle_exit: bool = False) -> ConsumerStats:
        """Consumes until `stop` is set (or, with `idle_exit`, until the stream has nothing new)."""
        import redis

        stop = stop or threading.Event()
        self.ensure_group()
        LOG.info("consuming %s", self.description)
        while not stop.is_set():  # 1. what this consumer read before and did not acknowledge
            pending = self._own_pending()
            if not pending:
                break
            LOG.info("re-processing %d entries this consumer had not acknowledged", len(pending))
            self.process(pending)
        last_claim = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() - last_claim >= self.claim_idle_ms / 1000 / 2:  # 2. a dead consumer's
                    claimed = self._claim()
                    last_claim = time.monotonic()
                    if claimed:
                        LOG.info("claimed %d entries pending longer than %d ms", len(claimed), self.claim_idle_ms)
                        self.stats.claimed += len(claimed)
                        for i in range(0, len(claimed), self.batch_size):
                            self.process(claimed[i : i + self.batch_size])
                answer = self.redis.xreadgroup(  # 3. new entries
                    self.group, self.consumer, {self.stream: ">"}, count=self.batch_size, block=self.block_ms
                )
                entries = answer[0][1] if answer else []
                self.process(entries)
            except (redis.RedisError, StoreUnavailableError) as error:
                # Nothing of the failed batch was acknowledged: it stays pending for this consumer
                # and is re-read (own pending first) once Redis answers again.
                LOG.warning("Redis failed (%s); retrying in %.0f s", error, RETRY_S)
                stop.wait(RETRY_S)
                last_claim = 0.0
                try:
                    while not stop.is_set() and (pending := self._own_pending()):
                        self.process(pending)
                except (redis.RedisError, StoreUnavailableError):
                    pass
                continue
            if idle_exit and not entries:
                break
        s = self.stats
        LOG.info(
            "stopped: %d read, %d applied, %d duplicate(s), %d rejected, %d claimed",
            s.read,
            s.applied,
            s.duplicates,
            s.rejected,
            s.claimed,
        )
        return s

    def close(self) -> None:
        self.views.close()
        self.redis.close()
