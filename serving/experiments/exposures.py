"""The exposure log: what each answer showed to whom, written off the request path as rolling Parquet.

A request only puts a small tuple on a bounded queue (`ExposureLog.record`, never blocking: when
the queue is full the exposure is dropped and counted in `candidates_exposures_dropped_total`).
One background thread turns queued answers into rows (the article ids are looked up there, not
on the request path) and writes a Parquet file every `rows_per_file` rows or `roll_interval_s`
seconds, whichever comes first, and at shutdown. Each file is written to a hidden temporary name,
fsynced and renamed (homefeed/atomic.py), so a reader globbing `*.parquet` never sees half a
file. File names carry the host, the process id and a sequence number, so the workers and replicas
of one service can share a directory. Memory is bounded by `max_queue` answers plus one file's rows.

Schema (one row per answer; docs/experiments.md, and sql/exposures_table.sql to load it into BigQuery):

  request_id    string                 X-Request-ID when the client sent a valid one, else a random id
  experiment    string                 the experiment's name
  user_id       string
  arm           string
  overridden    bool                   the arm came from `?arm=` (debugging), not from the assignment
  share         double                 the arm's configured share of users (the report's SRM check)
  model_version string                 the version that answered (the popularity arm: the version whose
                                       popular list it served)
  fallback      bool                   the answer was the popular list (see fallback_reason in the API)
  served_at     timestamp[us, UTC]     when the answer was made
  candidates    list<struct<rank int32, article_id string>>   the first `top_n` candidates, rank 1 first
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from homefeed import atomic

LOG = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("experiment", pa.string()),
        ("user_id", pa.string()),
        ("arm", pa.string()),
        ("overridden", pa.bool_()),
        ("share", pa.float64()),
        ("model_version", pa.string()),
        ("fallback", pa.bool_()),
        ("served_at", pa.timestamp("us", tz="UTC")),
        ("candidates", pa.list_(pa.struct([("rank", pa.int32()), ("article_id", pa.string())]))),
    ]
)
FILE_PREFIX = "exposures-"
DEFAULT_MAX_QUEUE = 10_000
DEFAULT_ROWS_PER_FILE = 50_000
DEFAULT_ROLL_INTERVAL_S = 60.0
_STOP = object()


@dataclass(frozen=True)
class Exposure:
    """One answer as queued: what the thread needs to make its row (`ids` resolves the article ids)."""

    request_id: str
    user_id: str
    arm: str
    overridden: bool
    share: float
    model_version: str
    fallback: bool
    served_at: float  # seconds since the epoch
    ids: Callable[[], list[str]]  # the first top_n article ids, best first (looked up on the thread)


class ExposureLog:
    """Rolling Parquet exposure files under `directory`, written by one background thread.

    Args:
      directory: created if missing.
      experiment: the experiment's name (a column).
      max_queue: answers waiting to be written at most; beyond it an exposure is dropped and counted.
      rows_per_file, roll_interval_s: a file is written when either is reached.
      on_drop, on_written: counters (`inc(n)`), e.g. Prometheus; optional.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        experiment: str,
        max_queue: int = DEFAULT_MAX_QUEUE,
        rows_per_file: int = DEFAULT_ROWS_PER_FILE,
        roll_interval_s: float = DEFAULT_ROLL_INTERVAL_S,
        on_drop: Any = None,
        on_written: Any = None,
    ):
        if max_queue < 1 or rows_per_file < 1 or roll_interval_s <= 0:
            raise ValueError(
                f"max_queue ({max_queue}) and rows_per_file ({rows_per_file}) must be >= 1, "
                f"roll_interval_s ({roll_interval_s}) > 0"
            )
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.experiment = experiment
        self.rows_per_file = rows_per_file
        self.roll_interval_s = roll_interval_s
        self.dropped = 0
        self.written = 0
        self.files = 0
        self._on_drop, self._on_written = on_drop, on_written
        self._queue: queue.Queue = queue.Queue(max_queue)
        self._sequence = itertools.count()
        self._stem = f"{FILE_PREFIX}{socket.gethostname()}-{os.getpid()}-{time.strftime('%Y%m%dT%H%M%S')}"
        self._thread = threading.Thread(target=self._run, name="exposure-log", daemon=True)
        self._thread.start()

    def record(self, exposure: Exposure) -> bool:
        """Queues `exposure` for the next file; False (and counted) when the queue is full. Never blocks."""
        try:
            self._queue.put_nowait(exposure)
            return True
        except queue.Full:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop.inc()
            return False

    def close(self, timeout_s: float = 30.0) -> None:
        """Writes what is queued and stops the thread (waits at most `timeout_s`)."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            LOG.error("exposure log: the queue stayed full for %.0fs at shutdown; its answers are lost", timeout_s)
            return
        self._thread.join(timeout_s)

    def _run(self) -> None:
        rows: list[tuple[Exposure, list[str]]] = []
        first_at = 0.0
        while True:
            timeout = None if not rows else max(0.0, first_at + self.roll_interval_s - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                self._write(rows)
                return
            if item is not None:
                try:
                    rows.append((item, list(item.ids())))
                except Exception:  # one bad answer never stops the log
                    LOG.exception("exposure log: could not record the answer for user %r", item.user_id)
                    self._count_drop()
                if len(rows) == 1:
                    first_at = time.monotonic()
            if rows and (len(rows) >= self.rows_per_file or time.monotonic() - first_at >= self.roll_interval_s):
                self._write(rows)
                rows = []

    def _table(self, rows: list[tuple[Exposure, list[str]]]) -> pa.Table:
        """The rows as columns (the candidates as one flat id array with list offsets: no dict per id)."""
        exposures = [exposure for exposure, _ in rows]
        lengths = np.fromiter((len(ids) for _, ids in rows), np.int32, len(rows))
        offsets = np.zeros(len(rows) + 1, np.int32)
        np.cumsum(lengths, out=offsets[1:])
        ranks = np.arange(offsets[-1], dtype=np.int32) - np.repeat(offsets[:-1], lengths) + 1
        flat = pa.array(list(itertools.chain.from_iterable(ids for _, ids in rows)), pa.string())
        candidates = pa.ListArray.from_arrays(
            pa.array(offsets), pa.StructArray.from_arrays([pa.array(ranks), flat], names=["rank", "article_id"])
        )
        columns = {
            "request_id": [e.request_id for e in exposures],
            "experiment": [self.experiment] * len(rows),
            "user_id": [e.user_id for e in exposures],
            "arm": [e.arm for e in exposures],
            "overridden": [e.overridden for e in exposures],
            "share": [e.share for e in exposures],
            "model_version": [e.model_version for e in exposures],
            "fallback": [e.fallback for e in exposures],
            "served_at": [int(e.served_at * 1_000_000) for e in exposures],
        }
        arrays = [pa.array(columns[f.name], f.type) for f in SCHEMA if f.name != "candidates"]
        return pa.Table.from_arrays([*arrays, candidates.cast(SCHEMA.field("candidates").type)], schema=SCHEMA)

    def _count_drop(self, n: int = 1) -> None:
        self.dropped += n
        if self._on_drop is not None:
            self._on_drop.inc(n)

    def _write(self, rows: list[tuple[Exposure, list[str]]]) -> None:
        if not rows:
            return
        path = self.directory / f"{self._stem}-{next(self._sequence):06d}.parquet"
        try:
            table = self._table(rows)
            atomic.write_with(path, lambda temporary: pq.write_table(table, temporary))
        except Exception:  # a full disk loses this file's rows (counted), not the service
            LOG.exception("exposure log: could not write %s; %d exposures lost", path, len(rows))
            self._count_drop(len(rows))
            return
        self.written += len(rows)
        self.files += 1
        if self._on_written is not None:
            self._on_written.inc(len(rows))


def read_exposures(directory: str | os.PathLike) -> pa.Table:
    """Every exposure file under `directory` as one table (SCHEMA); an unreadable file is an error naming it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"exposure directory {directory} does not exist")
    paths = sorted(directory.glob(f"{FILE_PREFIX}*.parquet"))
    if not paths:
        raise FileNotFoundError(f"no {FILE_PREFIX}*.parquet files in {directory}")
    tables = []
    for path in paths:
        try:
            table = pq.read_table(path)
        except Exception as error:
            raise ValueError(f"cannot read exposure file {path}: {error}") from None
        missing = [name for name in SCHEMA.names if name not in table.column_names]
        if missing:
            raise ValueError(f"exposure file {path} lacks column(s) {', '.join(missing)}")
        tables.append(table.select(SCHEMA.names).cast(SCHEMA))
    return pa.concat_tables(tables)
