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
stored key is never stored again.

Poison never blocks the stream: an entry that cannot be applied (invalid, larger than
`MAX_ENTRY_BYTES`: refused before it is decoded, or failing in any unforeseen way) is copied with
its reason to the dead-letter stream `<stream>:rejected` (capped at `dead_letter_cap` entries,
oldest trimmed first) and acknowledged; an entry already delivered `MAX_DELIVERIES` times without
being acknowledged (it made the consumer fail or die each time) is dead-lettered unread. The
dead-letter entry keeps the entry id, the reason and the first `PREVIEW_BYTES` of each field,
never a whole large value. The consumer checks its stop event between batches, and a batch's work
is bounded (`batch_size` entries of at most `MAX_ENTRY_BYTES`), so SIGTERM ends it within about
one batch plus `block_ms`.

The stream stays as long as what is not yet consumed: about once a second (`trim_interval_s`) the
consumer deletes the entries that every consumer group of the stream has read and acknowledged
(`XTRIM MINID` at the oldest entry some group still pending or not yet delivered). A stream that
other readers follow without a consumer group is kept whole with `trim_consumed=False`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from homefeed import features
from homefeed.redact import clip
from serving.live.events import RedisLiveViews, parse_item
from serving.store import DEFAULT_REDIS_PREFIX, StoreUnavailableError, _client, _redact

LOG = logging.getLogger(__name__)

DEFAULT_GROUP = "homefeed-live-views"
RETRY_S = 1.0
REJECTED_SUFFIX = ":rejected"
MAX_ENTRY_BYTES = 64 * 1024  # a view is a few hundred bytes; larger entries are dead-lettered unread
MAX_DELIVERIES = 3  # an entry read this often and never acknowledged is poison
DEFAULT_DEAD_LETTER_CAP = 100_000
PREVIEW_BYTES = 200


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
    trimmed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def _stream_id(value: bytes | str) -> tuple[int, int]:
    """A stream entry id ("ms-seq") as a pair that orders like the stream."""
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def decode_entry(fields: dict[bytes, bytes]) -> Any:
    """A stream entry's event item (from an `event` JSON field, or the fields themselves).

    Raises:
      ValueError: the entry is larger than `MAX_ENTRY_BYTES` (checked first) or not valid JSON.
    """
    size = sum(len(k) + len(v) for k, v in fields.items())
    if size > MAX_ENTRY_BYTES:
        raise ValueError(f"the entry is {size} bytes; the limit is {MAX_ENTRY_BYTES}")
    if b"event" in fields:
        try:
            return orjson.loads(fields[b"event"])
        except orjson.JSONDecodeError as error:
            raise ValueError(f"the event field is not valid JSON: {clip(str(error), 200)}") from None
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
      dead_letter_cap: at most about this many entries are kept in `<stream>:rejected` (MAXLEN ~).
      trim_consumed: delete the entries every group has acknowledged, every `trim_interval_s`.
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
        dead_letter_cap: int = DEFAULT_DEAD_LETTER_CAP,
        trim_consumed: bool = True,
        trim_interval_s: float = 1.0,
    ):
        self.stream, self.group = stream, group
        self.consumer = consumer or default_consumer_name()
        self.batch_size, self.block_ms, self.claim_idle_ms = batch_size, block_ms, claim_idle_ms
        self.known_article = known_article
        self.dead_letter_cap = dead_letter_cap
        self.trim_consumed, self.trim_interval_s = trim_consumed, trim_interval_s
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
        """Writes the valid events of `entries`, dead-letters the others, then XACKs all."""
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
                rejected.append((entry_id, fields, str(error)))
            except Exception as error:  # an entry no check foresaw: dead-lettered, never retried forever
                LOG.exception("entry %s failed unexpectedly; dead-lettering it", entry_id.decode())
                rejected.append((entry_id, fields, f"unexpected {type(error).__name__}"))
        applied = self.views.add(views) if views else 0  # raises: nothing is acknowledged
        self.dead_letter(rejected)
        self.redis.xack(self.stream, self.group, *[entry_id for entry_id, _ in entries])
        s = self.stats
        s.read += len(entries)
        s.applied += applied
        s.duplicates += len(views) - applied
        s.rejected += len(rejected)
        s.batches += 1

    def dead_letter(self, rejected: Sequence[tuple[bytes, dict[bytes, bytes] | None, str]]) -> None:
        """Copies `(entry id, fields, reason)` to the capped `<stream>:rejected` (fields cut to
        `PREVIEW_BYTES` each); the reason is logged, at most 20 lines per batch."""
        if not rejected:
            return
        pipe = self.redis.pipeline(transaction=False)
        for i, (entry_id, fields, reason) in enumerate(rejected):
            record: dict[bytes, bytes] = {b"entry": entry_id, b"reason": clip(reason, 500).encode()}
            for name, value in list((fields or {}).items())[:8]:
                record[b"field:" + name[:64]] = value[:PREVIEW_BYTES]
            pipe.xadd(self.stream + REJECTED_SUFFIX, record, maxlen=self.dead_letter_cap, approximate=True)
            if i < 20:
                LOG.warning("entry %s rejected: %s", entry_id.decode(), clip(reason, 500))
            self.stats.reasons[reason[:60]] = self.stats.reasons.get(reason[:60], 0) + 1
        if len(rejected) > 20:
            LOG.warning(
                "%d more entries of this batch rejected (see %s)", len(rejected) - 20, self.stream + REJECTED_SUFFIX
            )
        if len(self.stats.reasons) > 100:  # a bounded summary, not one key per distinct message
            self.stats.reasons = dict(sorted(self.stats.reasons.items(), key=lambda kv: -kv[1])[:50])
        pipe.execute()

    def consumed_floor(self) -> tuple[int, int] | None:
        """The id below which every consumer group of the stream has read and acknowledged every
        entry: the oldest entry some group has pending, or not yet delivered; None when no group
        has acknowledged anything."""
        floor: tuple[int, int] | None = None
        for group in self.redis.xinfo_groups(self.stream):
            if group["pending"]:
                oldest = _stream_id(self.redis.xpending(self.stream, group["name"])["min"])
            else:  # everything up to the last delivered entry is acknowledged: keep what follows it
                ms, seq = _stream_id(group["last-delivered-id"])
                oldest = (ms, seq + 1)
            if oldest == (0, 1) or oldest == (0, 0):
                return None
            floor = oldest if floor is None else min(floor, oldest)
        return floor

    def trim(self) -> int:
        """Deletes the entries every group has acknowledged (see `consumed_floor`); how many."""
        floor = self.consumed_floor()
        if floor is None:
            return 0
        trimmed = int(self.redis.xtrim(self.stream, minid=f"{floor[0]}-{floor[1]}", approximate=False))
        self.stats.trimmed += trimmed
        return trimmed

    def without_poison(self, entries: list) -> list:
        """`entries` less those delivered `MAX_DELIVERIES` times or more, which are dead-lettered
        and acknowledged unread (each made this consumer, or another, fail before its ack)."""
        if not entries:
            return entries
        ids = [entry_id for entry_id, _ in entries]
        info = self.redis.xpending_range(self.stream, self.group, min=min(ids), max=max(ids), count=len(ids) * 2 + 10)
        counts = {row["message_id"]: row["times_delivered"] for row in info}
        poison = [
            (entry_id, None, f"delivered {counts[entry_id]} times and never acknowledged")
            for entry_id, _ in entries
            if counts.get(entry_id, 0) >= MAX_DELIVERIES
        ]
        if not poison:
            return entries
        self.dead_letter(poison)
        self.redis.xack(self.stream, self.group, *[entry_id for entry_id, _, _ in poison])
        self.stats.rejected += len(poison)
        dead = {entry_id for entry_id, _, _ in poison}
        return [(entry_id, fields) for entry_id, fields in entries if entry_id not in dead]

    def _own_pending(self) -> list:
        while True:
            answer = self.redis.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=self.batch_size)
            entries = answer[0][1] if answer else []
            kept = self.without_poison(entries)
            if kept or not entries:  # a batch of nothing but poison: read on
                return kept

    def _claim(self) -> list:
        claimed, start = [], "0-0"
        while True:
            result = self.redis.xautoclaim(
                self.stream, self.group, self.consumer, self.claim_idle_ms, start_id=start, count=self.batch_size
            )
            start, entries = result[0], result[1]
            claimed += self.without_poison(entries)
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
        last_claim = last_trim = 0.0
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
                if self.trim_consumed and time.monotonic() - last_trim >= self.trim_interval_s:
                    self.trim()
                    last_trim = time.monotonic()
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
                if self.trim_consumed:
                    self.trim()
                break
        s = self.stats
        LOG.info(
            "stopped: %d read, %d applied, %d duplicate(s), %d rejected, %d claimed, %d consumed entries trimmed",
            s.read,
            s.applied,
            s.duplicates,
            s.rejected,
            s.claimed,
            s.trimmed,
        )
        return s

    def close(self) -> None:
        self.views.close()
        self.redis.close()
