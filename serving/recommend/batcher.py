"""Micro-batching of user-tower calls: concurrent requests share one SavedModel call.

One SavedModel call costs about a millisecond whatever the batch size (up to a few dozen rows),
so under concurrency most of the encode time is per-call overhead. `EncodeBatcher.encode` lets
the request threads that want a user vector at about the same time share one call, the way
Triton's dynamic batcher does, without a thread of its own:

  * the first request to arrive becomes the batch's leader; it waits until `max_batch` requests
    have joined or `max_wait_s` (default 1 ms) has passed since it arrived, whichever is first;
  * the leader encodes every joined history in one call and hands each follower its row;
  * a request that arrives while a batch is being encoded starts the next batch.

An idle service pays nothing: a request alone waits at most `max_wait_s` only when another one is
already in flight (`in_flight` requests counted by the caller); a lone request is encoded at once.
A failing call fails every request of its batch with the same error (each falls back alone).
Batches are per encoder, so requests on different model versions never share a call.

The batch is padded to its longest history; the user tower masks padding, so each row equals the
single-row call (within float32 rounding: tests/serving/test_batcher.py checks against the
SavedModel called one row at a time).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_MAX_WAIT_S = 0.001
DEFAULT_MAX_BATCH = 32


@dataclass
class _Batch:
    encoder: Any
    rows: list[Mapping[str, Sequence[str]]] = field(default_factory=list)
    full: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    vectors: np.ndarray | None = None
    error: BaseException | None = None


class EncodeBatcher:
    """Gathers concurrent `encoder.encode([row])` calls into one `encoder.encode(rows)`.

    Args:
      max_wait_s: how long a batch's leader waits for company (only when other requests are in
        flight); 0 turns batching off (every call goes straight to the encoder).
      max_batch: a batch is encoded as soon as it holds this many rows.
    """

    def __init__(self, max_wait_s: float = DEFAULT_MAX_WAIT_S, max_batch: int = DEFAULT_MAX_BATCH):
        if max_wait_s < 0 or max_batch < 1:
            raise ValueError(f"max_wait_s must be >= 0 and max_batch >= 1, got {max_wait_s}, {max_batch}")
        self.max_wait_s = max_wait_s
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._open: _Batch | None = None  # the batch still taking rows
        self._in_flight = 0  # encode calls waiting or running, this batcher's own count
        self.calls = 0  # encoder calls made (for tests and the benchmark)
        self.rows = 0  # rows encoded

    def encode(self, encoder: Any, row: Mapping[str, Sequence[str]]) -> np.ndarray:
        """The user vector of one history, `float32 [1, dim]`, possibly computed in a shared call.

        Raises whatever `encoder.encode` raised for the batch this row was in.
        """
        if self.max_wait_s == 0:
            return self._call(encoder, [row])
        with self._lock:
            self._in_flight += 1
            batch = self._open
            if batch is not None and batch.encoder is encoder and len(batch.rows) < self.max_batch:
                position = len(batch.rows)
                batch.rows.append(row)
                if len(batch.rows) >= self.max_batch:
                    batch.full.set()
                leader = False
            else:
                batch = _Batch(encoder, [row])
                position = 0
                self._open = batch
                leader = True
                alone = self._in_flight == 1
        try:
            if leader:
                if not alone and self.max_batch > 1:
                    batch.full.wait(self.max_wait_s)
                with self._lock:
                    if self._open is batch:
                        self._open = None  # later arrivals start the next batch
                    rows = list(batch.rows)
                try:
                    batch.vectors = self._call(encoder, rows)
                except BaseException as error:  # every member of the batch gets the error
                    batch.error = error
                finally:
                    batch.done.set()
            else:
                batch.done.wait()
            if batch.error is not None:
                raise batch.error
            assert batch.vectors is not None  # the batch's caller sets vectors or error before done
            return batch.vectors[position : position + 1]
        finally:
            with self._lock:
                self._in_flight -= 1

    def _call(self, encoder: Any, rows: list) -> np.ndarray:
        vectors = encoder.encode(rows)
        self.calls += 1
        self.rows += len(rows)
        return vectors

    def describe(self) -> dict[str, float]:
        """Calls and rows so far, and the mean batch size."""
        return {"calls": self.calls, "rows": self.rows, "mean_batch": self.rows / self.calls if self.calls else 0.0}
