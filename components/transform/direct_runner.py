"""DirectRunner with several workers: a workaround for a record-dropping race in Beam's data plane.

Beam's portable runner core (the FnApiRunner behind DirectRunner's multi_threading and
multi_processing modes) sends elements between the runner and the SDK workers through
`TimeBasedBufferingClosableOutputStream` (apache_beam/runners/worker/data_plane.py) whenever its
`data_buffer_time_limit_ms` is above 0, and the FnApiRunner sets it to
`worker_handlers.DATA_BUFFER_TIME_LIMIT_MS` (1000 ms) for its own gRPC data service and for the
multi_threading workers. That stream's periodic flush thread runs `flush()`, which passes
`self.get()` to the send queue and then calls `self._clear()`, while the bundle's thread goes on
writing into the same buffer without the flush lock. Whatever is written between the two calls is
cleared without being sent: whole chunks of elements (runner -> worker) or parts of elements
(worker -> runner) vanish, silently. The send queue is byte-limited, so `flush()` can block
between the two calls for long when elements are large (our 16k-row record batches), which is why
the transform lost up to 21 % of its train records at 10^6 examples and small jobs lost nothing.

The smallest pipeline that shows it (tests/transform/test_parallel_direct_runner.py): 1,000
elements of 200 kB, counted once, then read again by a step that takes the count as a side input
(a PCollection read by two stages, as TF Transform's analyze and transform phases read the train
split): with 2 workers the second step sees 750 to 1,000 of them, and with
`DATA_BUFFER_TIME_LIMIT_MS = 0` (size-based flushing only, done by the writing thread itself
between whole elements) always 1,000.

The Beam issue that added the time-based flush is BEAM-7949 (apache/beam pull 10246); the race
is not reported upstream as of Beam 2.77.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

DIRECT_RUNNERS = ("DirectRunner", "direct")


def uses_parallel_direct_runner(options: PipelineOptions) -> bool:
    """True if `options` run the pipeline on the DirectRunner's FnApiRunner with workers that
    exchange data over gRPC (multi_threading or multi_processing, or more than one worker)."""
    if options.view_as(StandardOptions).runner not in DIRECT_RUNNERS:
        return False
    direct = options.view_as(DirectOptions)
    return direct.direct_running_mode in ("multi_threading", "multi_processing") or direct.direct_num_workers != 1


@contextlib.contextmanager
def size_based_data_flush() -> Iterator[None]:
    """Within the block, pipelines started on the FnApiRunner flush their data streams by size only.

    Sets Beam's `worker_handlers.DATA_BUFFER_TIME_LIMIT_MS` to 0 (read when a pipeline starts its
    data service and its workers) and restores it on exit. Without a time limit the writing thread
    flushes its own buffer after whole elements, so nothing is cleared unsent (module docstring).

    Raises:
      RuntimeError: this Beam has no `DATA_BUFFER_TIME_LIMIT_MS` (the workaround needs revisiting).
    """
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    if not isinstance(getattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS", None), int):
        raise RuntimeError(
            "apache_beam.runners.portability.fn_api_runner.worker_handlers.DATA_BUFFER_TIME_LIMIT_MS "
            "is gone in this Beam version: check whether its data plane still races (see "
            "components/transform/direct_runner.py) before running DirectRunner with several workers, "
            "or run with --direct_num_workers=1 --direct_running_mode=in_memory"
        )
    saved = worker_handlers.DATA_BUFFER_TIME_LIMIT_MS
    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0
    try:
        yield
    finally:
        worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = saved
