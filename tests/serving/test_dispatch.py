"""Batched request execution (serving/recommend/dispatch.py): the same answers as one request at a time."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serving.recommend import candidates as candidate_logic
from serving.recommend.dispatch import BatchDispatcher, run_batch
from serving.versions.pair import load_model_pair


@pytest.fixture(scope="module")
def pair(model_v1):
    return load_model_pair(model_v1)


def _same(got, expected) -> None:
    assert (got.fallback, got.fallback_reason, got.rows) == (expected.fallback, expected.fallback_reason, expected.rows)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-5, atol=1e-6)


USERS = ["u0000", "u0001", "nobody", "u0002", "u0039", "u0003", "u0004"]  # "nobody": unknown, the fallback


def test_a_batch_answers_each_request_as_recommend_does(pair):
    requests = [(pair, None, user, 10 + i, i % 2 == 0) for i, user in enumerate(USERS)]
    results = run_batch(requests)
    for arguments, got in zip(requests, results):
        _same(got, candidate_logic.recommend(*arguments))
    assert {r.fallback_reason for r in results} >= {"unknown_user", None}


def test_a_failing_model_call_gives_each_member_the_fallback_and_a_bad_request_only_its_own_error(pair):
    class Broken:
        uses_searches = False

        def encode(self, rows):
            raise RuntimeError("model call failed")

    import dataclasses

    broken = dataclasses.replace(pair, encoder=Broken())
    results = run_batch(
        [(broken, None, "u0000", 5), (broken, None, "u0001", 5), (pair, None, "u0002", 5), (pair, None, "u0003", "x")]
    )
    assert [r.fallback_reason for r in results[:2]] == ["model_error", "model_error"]
    _same(results[2], candidate_logic.recommend(pair, None, "u0002", 5))
    assert isinstance(results[3], TypeError)  # k="x": that request's own error, not the batch's


def test_concurrent_requests_run_in_shared_batches(pair):
    dispatcher = BatchDispatcher(max_batch=4)

    async def many():
        return await asyncio.gather(*(dispatcher.recommend(pair, None, user, 20) for user in USERS * 3))

    try:
        results = asyncio.run(many())
    finally:
        dispatcher.close()
    for user, got in zip(USERS * 3, results):
        _same(got, candidate_logic.recommend(pair, None, user, 20))
    assert dispatcher.requests == len(results) and dispatcher.batches < len(results)


async def _waits_its_limit_behind_a_stuck_batch(wait, request, release) -> None:
    """`wait(max_wait_s=0.05)` returns after about its limit while `request`'s batch is held
    (until `release` is set, which this then does)."""
    import time

    stuck = asyncio.create_task(request)
    await asyncio.sleep(0.01)
    started = time.monotonic()
    await wait(max_wait_s=0.05)
    assert 0.04 <= time.monotonic() - started < 2.0 and not stuck.done()
    release.set()
    await stuck


def test_a_write_waits_for_the_running_batch_and_its_answers_but_not_longer_than_its_limit(pair, monkeypatch):
    """`reads_first`: idle -> at once; during a batch -> after the batch's answers are delivered;
    when batches never stop -> after max_wait_s."""
    import threading

    from serving.recommend import dispatch

    release = threading.Event()
    real = dispatch.run_batch

    def held_batch(requests):  # the batch "computes" until the test releases it
        release.wait(10)
        return real(requests)

    monkeypatch.setattr(dispatch, "run_batch", held_batch)
    dispatcher = BatchDispatcher(max_batch=4)
    order: list[str] = []

    async def scenario():
        await asyncio.wait_for(dispatcher.reads_first(), 0.5)  # idle: no wait

        async def handler():  # a request's handler: sends its answer in the step its result wakes
            answer = await dispatcher.recommend(pair, None, "u0001", 5)
            order.append("answer")
            return answer

        read = asyncio.create_task(handler())
        await asyncio.sleep(0.01)  # the batch is running now

        async def write():
            await dispatcher.reads_first(max_wait_s=5.0)
            order.append("write")

        writer = asyncio.create_task(write())
        await asyncio.sleep(0.05)
        assert not writer.done() and order == []  # still computing: the write waits
        release.set()
        await asyncio.gather(read, writer)
        assert order == ["answer", "write"]

        release.clear()  # a batch that never ends in time: the write goes after its limit
        await _waits_its_limit_behind_a_stuck_batch(
            dispatcher.reads_first, dispatcher.recommend(pair, None, "u0002", 5), release
        )

    try:
        asyncio.run(scenario())
    finally:
        dispatcher.close()


def test_next_gap_is_immediate_when_idle_after_the_running_batch_else_after_the_next_one(pair, monkeypatch):
    """`next_gap`: no requests lately -> at once; a batch running -> after its answers; requests
    still coming (a batch ended just now) -> after the next batch's answers; never beyond max_wait_s."""
    import threading

    from serving.recommend import dispatch

    release = threading.Event()
    real = dispatch.run_batch
    monkeypatch.setattr(dispatch, "run_batch", lambda requests: release.wait(10) and real(requests))
    dispatcher = BatchDispatcher(max_batch=4)
    order: list[str] = []

    async def request(name):
        await dispatcher.recommend(pair, None, "u0001", 5)
        order.append(name)

    async def write_step(name, max_wait_s=5.0):
        await dispatcher.next_gap(max_wait_s)
        order.append(name)

    async def scenario():
        await asyncio.wait_for(dispatcher.next_gap(), 0.5)  # nothing ever ran: at once
        first = asyncio.create_task(request("answer 1"))
        await asyncio.sleep(0.01)
        step = asyncio.create_task(write_step("step 1"))  # a batch runs: after its answer
        await asyncio.sleep(0.02)
        assert order == []
        release.set()
        await asyncio.gather(first, step)
        assert order == ["answer 1", "step 1"]

        release.clear()  # the batch ended just now: requests are coming, so after the next batch
        step = asyncio.create_task(write_step("step 2"))
        await asyncio.sleep(0)
        second = asyncio.create_task(request("answer 2"))
        await asyncio.sleep(0.02)
        assert order == ["answer 1", "step 1"]
        release.set()
        await asyncio.gather(second, step)
        assert order[-2:] == ["answer 2", "step 2"]

        await asyncio.sleep(dispatch.READS_ACTIVE_S * 3)  # quiet again: at once
        await asyncio.wait_for(dispatcher.next_gap(), 0.5)

        release.clear()  # a batch that never ends in time: the step goes after its limit
        await _waits_its_limit_behind_a_stuck_batch(dispatcher.next_gap, request("answer 3"), release)

    try:
        asyncio.run(scenario())
    finally:
        dispatcher.close()


def test_histories_read_over_the_network_join_the_batch_already_prepared(pair, model_v1, redis_url):
    from serving.store import RedisStore, load_histories_to_redis

    prefix = "dispatch-test:"
    load_histories_to_redis(model_v1 / "user_histories.parquet", redis_url, prefix=prefix)
    store = RedisStore(redis_url, prefix, timeout_s=1.0)
    dispatcher = BatchDispatcher(max_batch=4, prepare_apart=True)

    async def many():
        return await asyncio.gather(*(dispatcher.recommend(pair, store, user, 20) for user in USERS * 2))

    try:
        results = asyncio.run(many())
    finally:
        dispatcher.close()
        store.close()
    for user, got in zip(USERS * 2, results):
        _same(got, candidate_logic.recommend(pair, store, user, 20))
    assert {r.fallback_reason for r in results} >= {"unknown_user", None}
    fallbacks = sum(r.fallback for r in results)  # answered before reaching a batch
    assert dispatcher.requests == len(results) - fallbacks and dispatcher.batches < dispatcher.requests


def test_max_batch_one_is_one_model_call_per_request_and_zero_is_refused(pair):
    dispatcher = BatchDispatcher(max_batch=1)

    async def many():
        return await asyncio.gather(*(dispatcher.recommend(pair, None, user, 5) for user in USERS))

    try:
        asyncio.run(many())
    finally:
        dispatcher.close()
    assert dispatcher.batches == dispatcher.requests == len(USERS)
    with pytest.raises(ValueError, match="max_batch must be >= 1, got 0"):
        BatchDispatcher(max_batch=0)
