"""The service's one request batcher: candidate requests run in batches on one compute thread.

The async handler hands its request to `BatchDispatcher.recommend`. One dedicated thread takes
every request waiting at that moment (up to `max_batch`), and for the batch: reads each history
(`candidates.prepare`), encodes all of them in ONE user-tower call per model version, then
searches and filters each (`candidates.finish`). Requests that arrive while a batch runs wait for
the next one, so batches grow with the load and a request alone is run at once (continuous
batching: no timer). `max_batch=1` turns batching off (one user-tower call per request).

Why: a sync FastAPI handler costs a hop to anyio's 40-thread pool per request, and those threads
contend for the GIL with the event loop; here the event loop does HTTP and JSON, one thread does
the model and FAISS work (both release the GIL while they compute).

With Redis (`--redis-url`, `prepare_apart=True`) the history read is a network call that may take up
to its timeout: each request reads its history on the event loop's default thread pool first, so a
slow read never holds up a batch; the batch then encodes, searches and filters as above.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from serving.recommend import candidates as candidate_logic

LOG = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 32
# The longest a live write waits for running candidate batches (`BatchDispatcher.reads_first`)
# or for the next pause between them (`BatchDispatcher.next_gap`), each time it waits.
READS_FIRST_MAX_WAIT_S = 0.005
# Candidate requests count as arriving steadily while the last batch ended this recently: a write's
# next step then waits for the pause after the next batch instead of running on at once.
READS_ACTIVE_S = 0.003


def run_batch(requests: list) -> list[Any]:
    """`candidates.recommend` for each of `requests` (its argument tuples, or a `PendingAnswer` already
    prepared), with the user-tower calls of a batch made as one call per encoder. Each result is a
    `CandidateAnswer`, or the exception that request raised."""
    steps: list[Any] = []
    for request in requests:
        if isinstance(request, candidate_logic.PendingAnswer):
            steps.append(request)
            continue
        try:
            steps.append(candidate_logic.prepare(*request))
        except Exception as error:
            steps.append(error)
    pending = [i for i, step in enumerate(steps) if isinstance(step, candidate_logic.PendingAnswer)]
    by_encoder: dict[int, list[int]] = {}
    for i in pending:
        by_encoder.setdefault(id(steps[i].pair.encoder), []).append(i)
    for members in by_encoder.values():
        encoder = steps[members[0]].pair.encoder
        started = time.perf_counter()
        try:
            vectors = encoder.encode([steps[i].history for i in members])
        except Exception:  # a bad history must not become a 500: each member falls back
            seconds = time.perf_counter() - started
            for i in members:
                steps[i] = candidate_logic.encode_failed(steps[i], seconds)
            continue
        seconds = time.perf_counter() - started
        for row, i in enumerate(members):
            steps[i].timings["encode"] = seconds
            try:
                steps[i] = candidate_logic.finish(steps[i], vectors[row : row + 1])
            except Exception as error:
                steps[i] = error
    return steps


async def _wait_at_most(event: asyncio.Event, max_wait_s: float) -> None:
    """Returns once `event` is set or `max_wait_s` has passed, whichever comes first."""
    try:
        async with asyncio.timeout(max_wait_s):
            await event.wait()
    except TimeoutError:
        pass


class BatchDispatcher:
    """Runs candidate requests from the event loop in batches on one compute thread.

    Args:
      max_batch: at most this many requests per batch (1: one user-tower call per request).
      prepare_apart: read each history on the default thread pool before it joins a batch (a store
        that waits on the network, e.g. Redis); False: the compute thread reads them.
    """

    def __init__(self, max_batch: int = DEFAULT_MAX_BATCH, prepare_apart: bool = False):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self.prepare_apart = prepare_apart
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="candidates-compute")
        self._waiting: list[tuple[tuple, asyncio.Future]] = []
        self._running = False
        self._quiet = asyncio.Event()  # set while no batch runs (see `reads_first`)
        self._quiet.set()
        self._batch_done = asyncio.Event()  # set, then replaced, as each batch's answers go out (`next_gap`)
        self._last_done = float("-inf")  # time.monotonic() then
        self.batches = 0  # for the benchmark and tests
        self.requests = 0

    async def recommend(self, *arguments) -> candidate_logic.CandidateAnswer:
        """`candidates.recommend(*arguments)`, run in the next batch."""
        loop = asyncio.get_running_loop()
        request: Any = arguments
        if self.prepare_apart:
            request = await loop.run_in_executor(None, candidate_logic.prepare, *arguments)
            if isinstance(request, candidate_logic.CandidateAnswer):  # the fallback: nothing to compute
                return request
        future = loop.create_future()
        self._waiting.append((request, future))
        if not self._running:
            self._start(loop)
        return await future

    async def reads_first(self, max_wait_s: float = READS_FIRST_MAX_WAIT_S) -> None:
        """Returns once no batch of candidate requests runs, or after `max_wait_s` (a write never
        waits longer, however busy the reads keep the dispatcher).

        A live write awaits this before it runs on the event loop: started while a batch computes,
        it would hold the GIL the compute thread needs between its NumPy and FAISS calls, and the
        candidate request would wait for the whole write. Run after the batch, the write
        overlaps the clients' turnaround instead (measured in benchmarks/live.py: docs/live.md).
        A batch's answers are sent before the write starts: their tasks are woken first."""
        if not self._quiet.is_set():
            await _wait_at_most(self._quiet, max_wait_s)

    async def next_gap(self, max_wait_s: float = READS_FIRST_MAX_WAIT_S) -> None:
        """Returns at the next pause between candidate batches: after the running batch's answers,
        or, while requests keep coming (the last batch ended under `READS_ACTIVE_S` ago), after
        the next batch's; at once when no requests come; never later than `max_wait_s`.

        A live write takes one step per pause (see routes_live): candidate requests leave pauses
        between them (a client turning an answer into its next request), a write's step fits in
        one, and a whole write does not. Run step by step, a write is done a few batches later
        instead of making the request that arrives during it wait for all of it."""
        if not self._quiet.is_set() or time.monotonic() - self._last_done < READS_ACTIVE_S:
            await _wait_at_most(self._batch_done, max_wait_s)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            batch = [(arguments, future) for arguments, future in batch if not future.done()]  # not cancelled
            if batch:
                break
            if not self._waiting:
                self._running = False
                self._quiet.set()
                return
        self._running = True
        self._quiet.clear()
        self.batches += 1
        self.requests += len(batch)
        work = loop.run_in_executor(self._executor, run_batch, [arguments for arguments, _ in batch])
        work.add_done_callback(lambda done: self._finished(loop, batch, done))

    def _finished(self, loop, batch, done: asyncio.Future) -> None:
        error = done.exception()
        results = [error] * len(batch) if error is not None else done.result()
        for (_, future), result in zip(batch, results):
            if future.done():  # the client went away
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        self._running = False
        self._last_done = time.monotonic()
        done_event, self._batch_done = self._batch_done, asyncio.Event()
        done_event.set()  # after the answers' futures, like `_quiet`: their tasks run first
        if self._waiting:
            self._start(loop)
        else:
            self._quiet.set()  # after the answers' futures: their tasks run before a waiting write

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
