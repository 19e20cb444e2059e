"""Micro-batching (serving/recommend/batcher.py): shared user-tower calls give each request its own vector."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from serving.recommend.batcher import EncodeBatcher
from trainer.towers.serving_model import UserEncoder


@pytest.fixture(scope="module")
def encoder(model_v1) -> UserEncoder:
    return UserEncoder(model_v1)


@pytest.fixture(scope="module")
def rows(model_v1) -> list[dict]:
    frame = pd.read_parquet(model_v1 / "user_histories.parquet")
    return [{c: list(frame[c][i]) for c in frame.columns if c.startswith("history")} for i in range(len(frame))]


def _concurrently(batcher: EncodeBatcher, encoder, rows: list[dict]) -> list:
    """Encodes every row from its own thread, all released at once; results (or errors) by row."""
    start = threading.Barrier(len(rows))
    results: list = [None] * len(rows)

    def work(i: int) -> None:
        start.wait()
        try:
            results[i] = batcher.encode(encoder, rows[i])
        except Exception as error:
            results[i] = error

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(rows))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_concurrent_requests_share_calls_and_each_gets_its_own_vector(encoder, rows):
    rows = rows[:24]
    # Reference: the SavedModel called one row at a time, as the service did without batching.
    expected = np.concatenate([encoder.encode([row]) for row in rows])
    batcher = EncodeBatcher(max_wait_s=0.05, max_batch=8)
    results = _concurrently(batcher, encoder, rows)
    assert all(isinstance(r, np.ndarray) and r.shape == (1, encoder.dim) for r in results), results
    np.testing.assert_allclose(np.concatenate(results), expected, rtol=1e-5, atol=1e-6)
    assert batcher.rows == len(rows)
    assert batcher.calls < len(rows)  # some rows shared a call...
    assert batcher.rows / batcher.calls <= 8  # ...never more than max_batch of them


def test_a_lone_request_does_not_wait(encoder, rows):
    batcher = EncodeBatcher(max_wait_s=5.0)
    import time

    started = time.perf_counter()
    vector = batcher.encode(encoder, rows[0])
    assert time.perf_counter() - started < 2.0  # not the 5 s window: nobody else was in flight
    np.testing.assert_allclose(vector, encoder.encode([rows[0]]), rtol=1e-5, atol=1e-6)


def test_a_failing_call_fails_each_request_of_its_batch_and_the_next_batch_works(encoder, rows):
    class Flaky:
        dim = encoder.dim

        def __init__(self):
            self.fail = True

        def encode(self, batch):
            if self.fail:
                raise RuntimeError("model call failed")
            return encoder.encode(batch)

    flaky = Flaky()
    batcher = EncodeBatcher(max_wait_s=0.05, max_batch=4)
    results = _concurrently(batcher, flaky, rows[:4])
    assert all(isinstance(r, RuntimeError) and "model call failed" in str(r) for r in results), results
    flaky.fail = False
    results = _concurrently(batcher, flaky, rows[:4])
    np.testing.assert_allclose(np.concatenate(results), encoder.encode(rows[:4]), rtol=1e-5, atol=1e-6)


def test_batching_can_be_turned_off_and_bad_settings_are_refused(encoder, rows):
    batcher = EncodeBatcher(max_wait_s=0)
    _concurrently(batcher, encoder, rows[:6])
    assert batcher.calls == 6
    with pytest.raises(ValueError, match="max_batch"):
        EncodeBatcher(max_batch=0)
