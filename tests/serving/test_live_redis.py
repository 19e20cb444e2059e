"""The live feed with a real redis-server: replicas share views and listings; the stream consumer
survives SIGKILL without losing or repeating an event."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest
import redis
from live_http import ids_of, reference, running_service, snapshot_history, view

from serving.http.settings import ServiceSettings
from serving.live.events import live_key_prefix
from serving.store import load_histories_to_redis

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def model(make_model):
    return make_model("live-redis")


@pytest.fixture(scope="module")
def table(saved_models):
    return saved_models[0][1]


def settings(model, redis_url, prefix):
    return ServiceSettings(
        model=model, redis_url=redis_url, redis_prefix=prefix, redis_timeout_s=2.0, live_sync_interval_s=0.1
    )


@pytest.mark.slow
def test_replicas_share_views_and_listings_and_a_restart_keeps_them(model, table, redis_url):
    prefix = "rep:"
    load_histories_to_redis(model / "user_histories.parquet", redis_url, prefix=prefix)
    history = snapshot_history(model, "u0001")
    with (
        running_service(settings(model, redis_url, prefix)) as one,
        running_service(settings(model, redis_url, prefix)) as two,
    ):
        viewed = ids_of(two.get("/v1/users/u0001/candidates", params={"k": 5}))[0]
        assert one.post("/v1/events", json={"events": [view("u0001", viewed)]}).json()["applied"] == 1
        got = ids_of(two.get("/v1/users/u0001/candidates", params={"k": 20}))  # the other replica, at once
        assert viewed not in got and got == reference(model, table, [viewed, *history], 20)
        sold = ids_of(two.get("/v1/users/u0002/candidates", params={"k": 3}))[0]
        assert one.put(f"/v1/articles/{sold}", json={"status": "sold"}).status_code == 200
        deadline = time.monotonic() + 5
        while sold in ids_of(two.get("/v1/users/u0002/candidates", params={"k": 400})):
            assert time.monotonic() < deadline, "the second replica never saw the sold listing"
            time.sleep(0.05)
    with running_service(settings(model, redis_url, prefix)) as restarted:
        assert sold not in ids_of(restarted.get("/v1/users/u0002/candidates", params={"k": 400}))
        assert viewed not in ids_of(restarted.get("/v1/users/u0001/candidates", params={"k": 400}))


@pytest.mark.slow
def test_a_new_snapshot_keeps_live_views_newer_than_its_as_of(model, table, redis_url):
    prefix = "snap:"
    with running_service(settings(model, redis_url, prefix)) as service:
        service.post(
            "/v1/events",
            json={
                "events": [
                    view("u0003", "a000020", "2024-05-01T00:00:00Z"),  # before the snapshot's as_of (2024-06-01)
                    view("u0003", "a000021", "2024-07-01T00:00:00Z"),  # after it
                ]
            },
        )
        # Before any snapshot the user is known only by the live views: both count.
        assert ids_of(service.get("/v1/users/u0003/candidates", params={"k": 10})) == reference(
            model, table, ["a000021", "a000020"], 10
        )
        load_histories_to_redis(model / "user_histories.parquet", redis_url, prefix=prefix)
        time.sleep(5.1)  # the store re-reads the snapshot's as_of every 5 s
        history = snapshot_history(model, "u0003")
        got = ids_of(service.get("/v1/users/u0003/candidates", params={"k": 10}))
        assert got == reference(model, table, ["a000021", *history], 10)  # the older view is the snapshot's


def _consumer(redis_url, stream, name, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "homefeed_cli",
            "consume-events",
            "--redis-url",
            redis_url,
            "--stream",
            stream,
            "--consumer",
            name,
            "--redis-prefix",
            "cons:",
            "--batch-size",
            "5",
            "--block-ms",
            "100",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )


@pytest.mark.slow
def test_a_consumer_killed_mid_stream_resumes_without_losing_or_repeating_an_event(redis_url):
    client = redis.Redis.from_url(redis_url)
    stream, users, per_user = "views-kill", 20, 30
    events = [
        {
            "user_id": f"k{u:02d}",
            "article_id": f"a{(u * 7 + i) % 400:06d}",
            "viewed_at": f"2024-07-01T{i // 60:02d}:{i % 60:02d}:00Z",
            "event_id": f"e{u}-{i}",
        }
        for i in range(per_user)
        for u in range(users)
    ]
    first = _consumer(redis_url, stream, "c1")
    try:
        for i, event in enumerate(events):
            client.xadd(stream, {"event": orjson.dumps(event)})
            if i == len(events) // 2:
                deadline = time.monotonic() + 60
                while not client.keys(live_key_prefix("cons:") + "*"):  # it has written something
                    assert time.monotonic() < deadline and first.poll() is None, (
                        first.stdout.read() if first.poll() is not None else ""
                    )
                    time.sleep(0.01)
                first.send_signal(signal.SIGKILL)
                first.wait(timeout=10)
        client.xadd(stream, {"event": orjson.dumps(events[0])})  # a producer retry: the same event again
        client.xadd(stream, {"user_id": "k00", "article_id": "a000001", "viewed_at": "not a time"})
        pending = client.xpending(stream, "homefeed-live-views")["pending"]
        # A different consumer reclaims the dead one's pending entries (XAUTOCLAIM), then reads on.
        second = _consumer(redis_url, stream, "c2", "--claim-idle-ms", "1", "--exit-when-idle")
        output = second.communicate(timeout=120)[0].decode()
        assert second.returncode == 0, output
    finally:
        for process in (first,):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert client.xpending(stream, "homefeed-live-views")["pending"] == 0, "everything is acknowledged"
    for u in range(users):
        stored = orjson.loads(client.get(live_key_prefix("cons:") + f"k{u:02d}"))
        keys = [entry[2] for entry in stored]
        assert sorted(keys) == sorted(f"id:e{u}-{i}" for i in range(per_user)), (
            f"user k{u:02d}"
        )  # none lost, none twice
        assert [entry[0] for entry in stored] == sorted((entry[0] for entry in stored), reverse=True)
    rejected = client.xrange(stream + ":rejected")
    assert len(rejected) == 1 and b"RFC 3339" in rejected[0][1][b"reason"]
    assert "reclaimed" in output and (pending == 0 or "claimed" in output)


def test_a_restarted_consumer_first_finishes_what_it_had_read(redis_url):
    from serving.live.consumer import EventConsumer

    client = redis.Redis.from_url(redis_url)
    stream = "views-restart"
    consumer = EventConsumer(redis_url, stream, consumer="same", history_prefix="restart:", block_ms=50)
    consumer.ensure_group()
    for i in range(6):
        client.xadd(stream, {"user_id": "r1", "article_id": f"a{i:06d}", "viewed_at": f"2024-07-01T00:00:0{i}Z"})
    # The previous process read four entries and died before writing them (nothing acknowledged).
    client.xreadgroup(consumer.group, "same", {stream: ">"}, count=4)
    assert client.xpending(stream, consumer.group)["pending"] == 4
    stats = consumer.run(idle_exit=True)  # claim_idle_ms is 30 s: only its own pending can be these
    consumer.close()
    assert stats.read == 6 and stats.applied == 6 and stats.claimed == 0
    stored = orjson.loads(client.get(live_key_prefix("restart:") + "r1"))
    assert [e[1] for e in stored] == [f"a{i:06d}" for i in reversed(range(6))]
    assert client.xpending(stream, consumer.group)["pending"] == 0


def test_the_stream_keeps_only_what_some_group_has_not_yet_acknowledged(redis_url):
    from serving.live.consumer import EventConsumer

    client = redis.Redis.from_url(redis_url)
    stream = "views-trim"
    consumer = EventConsumer(redis_url, stream, consumer="c", history_prefix="trim:", block_ms=50)
    consumer.ensure_group()
    client.xgroup_create(stream, "slow-reader", id="0")  # a second group, behind this one
    ids = [
        client.xadd(stream, {"user_id": "t1", "article_id": f"a{i:06d}", "viewed_at": f"2024-07-01T00:00:{i:02d}Z"})
        for i in range(50)
    ]
    client.xreadgroup("slow-reader", "s", {stream: ">"}, count=20)  # read 20, acknowledged 10
    client.xack(stream, "slow-reader", *ids[:10])
    stats = consumer.run(idle_exit=True)
    assert stats.applied == 50
    assert stats.trimmed == 10 and client.xlen(stream) == 40, "only what the slow group acknowledged goes"
    assert client.xrange(stream, count=1)[0][0] == ids[10], "its first pending entry is kept"

    client.xack(stream, "slow-reader", *ids[10:20])
    client.xreadgroup("slow-reader", "s", {stream: ">"})
    client.xack(stream, "slow-reader", *ids[20:])
    assert consumer.trim() == 40 and client.xlen(stream) == 0, "every group has acknowledged everything"
    client.xadd(stream, {"user_id": "t1", "article_id": "a000099", "viewed_at": "2024-07-01T00:01:00Z"})
    assert consumer.trim() == 0, "a new entry nobody has read stays"
    consumer.close()

    kept = EventConsumer(
        redis_url, "views-keep", consumer="c", history_prefix="keep:", block_ms=50, trim_consumed=False
    )
    kept.ensure_group()
    for i in range(5):
        client.xadd("views-keep", {"user_id": "t2", "article_id": f"a{i:06d}", "viewed_at": "2024-07-01T00:00:00Z"})
    assert kept.run(idle_exit=True).trimmed == 0 and client.xlen("views-keep") == 5
    kept.close()


def test_redis_down_is_logged_once_not_at_every_sync(model, caplog):
    # With Redis unreachable the sync loop fails every interval; the log must say so once (and
    # again only now and then), not four lines a second for as long as Redis is down.
    from tests.support.ports import free_port

    down = f"redis://127.0.0.1:{free_port()}/0"
    with caplog.at_level("WARNING", logger="serving.live.state"):
        with running_service(
            ServiceSettings(model=model, redis_url=down, redis_timeout_s=0.2, live_sync_interval_s=0.05)
        ) as client:
            assert client.get("/v1/users/u0001/candidates").json()["fallback_reason"] == "history_store_unavailable"
            time.sleep(2.0)  # about 40 sync attempts
    failures = [r for r in caplog.records if r.name == "serving.live.state" and "sync failed" in r.getMessage()]
    assert 1 <= len(failures) <= 2, [r.getMessage() for r in failures]


@pytest.mark.slow
def test_consume_events_against_an_unreachable_redis_says_so_in_one_line(model, redis_url):
    # Nothing listens on the port, or the password is wrong: a clear one-line error naming the
    # (masked) URL and exit status 2, not a redis-py traceback; the password is never printed.
    from tests.support.ports import free_port

    for url in (
        f"redis://:hunter2-pw@127.0.0.1:{free_port()}/0",
        redis_url.replace("redis://", "redis://nobody:hunter2-pw@"),
    ):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "homefeed_cli",
                "consume-events",
                "--redis-url",
                url,
                "--stream",
                "s",
                "--exit-when-idle",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and "hunter2" not in result.stderr + result.stdout
        assert "consume-events: error:" in result.stderr and "127.0.0.1" in result.stderr


@pytest.mark.slow
def test_foreign_or_corrupt_values_in_redis_never_make_a_500(model, table, redis_url):
    # Another writer (a bug, someone with redis-cli, a key clash) left values the service did not
    # write: an unreadable snapshot row falls back; unreadable live views are ignored and replaced
    # by the next posted view. Never a 500.
    from serving.store import RedisStore, StoreUnavailableError

    prefix = "odd:"
    load_histories_to_redis(model / "user_histories.parquet", redis_url, prefix=prefix)
    client = redis.Redis.from_url(redis_url)
    live = live_key_prefix(prefix)
    for value in (b"garbage", b'{"history": 5}', b"[]", b"7"):
        client.set(prefix + "u0001", value)
        with pytest.raises(StoreUnavailableError, match="u0001"):
            RedisStore(redis_url, prefix).get("u0001")
    broken_live = {
        "u0002": b"garbage",
        "u0003": b'{"a": 1}',
        "u0004": b"[[1, 2]]",
        "u0005": b'[["x", "a000001", "k"]]',
        "u0006": b"null",
    }
    with running_service(settings(model, redis_url, prefix)) as service:
        answer = service.get("/v1/users/u0001/candidates", params={"k": 5})
        assert answer.status_code == 200 and answer.json()["fallback"] is True, answer.text
        for user, bad in broken_live.items():
            before = ids_of(service.get(f"/v1/users/{user}/candidates", params={"k": 10}))
            client.set(live + user, bad)
            got = service.get(f"/v1/users/{user}/candidates", params={"k": 10})
            assert got.status_code == 200 and ids_of(got) == before, (user, got.text)  # ignored
            posted = service.post("/v1/events", json={"events": [view(user, "a000010")]})
            assert posted.status_code == 200 and posted.json()["applied"] == 1, (user, posted.text)
            assert orjson.loads(client.get(live + user))[0][1] == "a000010"
