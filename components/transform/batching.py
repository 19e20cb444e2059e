"""Re-batching the validated rows of each split into full batches for TensorFlow.

`records.validate` runs on fixed slices of the input, and each slice's good rows are then divided
by split: with 90 % train, 5 % validation and 5 % test, a 4096-row slice gives a ~3,700-row train
batch and two ~200-row ones. TF Transform runs its graph once per batch, with a fixed cost per
call (Arrow -> tensors, the session call, the analyzers' per-batch output), so the small batches
cost nearly as much as full ones. `SplitBatcher` gathers one split's rows, in order, into batches
of exactly `size` rows (the last one shorter), holding at most one batch of rows at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa


class SplitBatcher:
    """Gathers record batches of one schema into batches of `size` rows, keeping row order."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"batch size must be >= 1, got {size}")
        self.size = size
        self._parts: list[pa.RecordBatch] = []
        self._rows = 0

    def add(self, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        """Adds `batch`'s rows; yields each batch of `size` rows that is now complete."""
        if batch.num_rows:
            self._parts.append(batch)
            self._rows += batch.num_rows
        while self._rows >= self.size:
            yield self._take(self.size)

    def flush(self) -> Iterator[pa.RecordBatch]:
        """Yields the remaining rows (fewer than `size`) as one batch, if any."""
        if self._rows:
            yield self._take(self._rows)

    def _take(self, n: int) -> pa.RecordBatch:
        if len(self._parts) == 1 and self._parts[0].num_rows == n:
            head, self._parts = self._parts[0], []
        else:
            table = pa.Table.from_batches(self._parts)
            head = table.slice(0, n).combine_chunks().to_batches()[0]
            self._parts = table.slice(n).to_batches()
        self._rows -= n
        return head
