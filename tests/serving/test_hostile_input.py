"""Hostile input costs bounded, linear work: redaction, per-item reasons, the stream consumer.

Costs are shown structurally (what reaches a pattern or a message is bounded), not timed: the
timings are benchmarks/hostile.py's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest
import redis

from homefeed import redact
from serving.live.articles import ArticleError, parse_article
from serving.live.consumer import MAX_DELIVERIES, MAX_ENTRY_BYTES, REJECTED_SUFFIX, EventConsumer
from serving.live.events import live_key_prefix, parse_items
from serving.live.items import parse_timestamp


@pytest.mark.parametrize("size", [100_000, 2_000_000])
@pytest.mark.parametrize("unit", ["a", "-", "--password", "a://", "/a", "Bearer "])
def test_redaction_of_a_huge_client_value_is_cut_before_any_pattern(size, unit):
    text = unit * (size // len(unit))
    assert len(redact.redact(text)) <= redact.MAX_CHARS + 40
    assert len(redact.public_message(text)) <= redact.MAX_CHARS + 40


def test_redaction_still_masks_what_it_did():
    text = "redis://app:s3cret@cache:6379/0?password=x --redis-password=abc --token x Bearer abc API_TOKEN=zz"
    assert redact.redact(text) == (
        "redis://app:***@cache:6379/0?password=*** --redis-password=*** --token *** Bearer *** API_TOKEN=***"
    )
    assert "s3cret" not in redact.redact("x" * (redact.MAX_CHARS - 30) + " redis://:s3cret@h")


@pytest.mark.parametrize("field", ["viewed_at", "user_id", "article_id", "event_id", "type"])
def test_a_huge_event_field_is_refused_by_its_size_and_never_echoed(field):
    item = {"user_id": "u1", "article_id": "a1", "viewed_at": "2024-07-01T00:00:00Z", field: "7" * 100_000}
    views, rejected = parse_items(
        [item, {"user_id": "u1", "article_id": "a1", "viewed_at": "2024-07-01T00:00:00Z"}], None
    )
    assert len(views) == 1 and [r["index"] for r in rejected] == [0]
    assert len(rejected[0]["reason"]) < 200 and "7" * 100 not in rejected[0]["reason"]


@pytest.mark.parametrize(
    "created_at",
    [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "1500-01-01T00:00:00Z",
        "2024-W01-1T00:00:00+00:00",
        "2024-06-01T12:00+00:00",
        "2024-06-01T12:00:00",
        "x" * 5000,
    ],
)
def test_odd_created_at_values_are_422_reasons_not_errors_later(created_at):
    with pytest.raises(ArticleError, match="created_at|body") as error:
        parse_article("a1", {"created_at": created_at})
    assert len(str(error.value)) < 300


def test_rfc3339_timestamps_with_offsets_and_fractions_parse():
    assert parse_timestamp("2024-06-01T12:00:00.123456789+02:00") == parse_timestamp("2024-06-01T10:00:00.123Z") + 0
    assert parse_article("a1", {"created_at": "2024-06-01t12:00:00z"}).created_at == "2024-06-01t12:00:00z"


# ---------------------------------------------------------------------------------------------
# The stream consumer: poison is dead-lettered to a capped stream, acknowledged, never re-read.
# ---------------------------------------------------------------------------------------------
def _good(i: int) -> dict:
    return {"user_id": "p1", "article_id": f"a{i:06d}", "viewed_at": f"2024-07-01T00:00:{i:02d}Z"}


@pytest.mark.redis
def test_huge_and_broken_entries_are_dead_lettered_capped_and_acknowledged(redis_url):
    client = redis.Redis.from_url(redis_url)
    stream = "hostile-views"
    consumer = EventConsumer(redis_url, stream, consumer="c", history_prefix="hostile:", block_ms=50, dead_letter_cap=5)
    client.xadd(stream, {"user_id": "p1", "article_id": "a1", "viewed_at": "9" * 2_000_000})
    client.xadd(stream, {"event": b"{" * (MAX_ENTRY_BYTES - 10)})
    for _ in range(300):
        client.xadd(stream, {"event": b"not json"})
    for i in range(3):
        client.xadd(stream, {"event": orjson.dumps(_good(i))})
    stats = consumer.run(idle_exit=True)
    consumer.close()
    assert stats.applied == 3 and stats.rejected == 302
    assert client.xpending(stream, consumer.group)["pending"] == 0
    dead = client.xrange(stream + REJECTED_SUFFIX)
    assert len(dead) < 302, "the dead-letter stream is capped"
    first = client.xrange(stream + REJECTED_SUFFIX, count=1)[0][1]
    assert max(len(v) for v in first.values()) <= 600
    assert len(orjson.loads(client.get(live_key_prefix("hostile:") + "p1"))) == 3


@pytest.mark.redis
def test_an_entry_delivered_again_and_again_is_dead_lettered_unread(redis_url):
    client = redis.Redis.from_url(redis_url)
    stream = "hostile-poison"
    consumer = EventConsumer(redis_url, stream, consumer="same", history_prefix="poison:", block_ms=50)
    consumer.ensure_group()
    poison = client.xadd(stream, {"event": orjson.dumps(_good(1))})
    client.xadd(stream, {"event": orjson.dumps(_good(2))})
    # Earlier runs of this consumer read the first entry and died before acknowledging it each time.
    client.xreadgroup(consumer.group, "same", {stream: ">"}, count=1)
    for _ in range(MAX_DELIVERIES - 1):
        client.xreadgroup(consumer.group, "same", {stream: "0"}, count=1)
    stats = consumer.run(idle_exit=True)
    consumer.close()
    assert stats.applied == 1 and stats.rejected == 1
    dead = client.xrange(stream + REJECTED_SUFFIX)
    assert [d[1][b"entry"] for d in dead] == [poison] and b"delivered" in dead[0][1][b"reason"]
    assert client.xpending(stream, consumer.group)["pending"] == 0


@pytest.mark.redis
def test_the_consumer_stops_on_sigterm_after_a_2mb_entry(redis_url):
    client = redis.Redis.from_url(redis_url)
    stream = "hostile-sigterm"
    client.xadd(stream, {"event": b'{"user_id": "s1", "viewed_at": "' + b"1" * 2_000_000 + b'"}'})
    client.xadd(stream, {"event": orjson.dumps({**_good(5), "user_id": "s1"})})
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "homefeed_cli",
            "consume-events",
            "--redis-url",
            redis_url,
            "--stream",
            stream,
            "--redis-prefix",
            "sig:",
            "--block-ms",
            "100",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while client.get(live_key_prefix("sig:") + "s1") is None:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert "1" * 1000 not in output, "the value is never logged whole"
    assert client.xpending(stream, "homefeed-live-views")["pending"] == 0
