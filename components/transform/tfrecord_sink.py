"""A gzip TFRecord sink for Beam whose elements are whole batches of serialized records.

The framing is TFRecord's documented format (tensorflow/core/lib/io/record_writer.h): for each
record, its length (uint64 little-endian), the masked CRC32C of the length, the data, the masked
CRC32C of the data; the CRC32C comes from `google-crc32c` (the C implementation Beam itself
uses). `tf.data.TFRecordDataset(..., compression_type="GZIP")` reads the files (tested in
tests/transform/test_tfrecord_sink.py against `tf.io.TFRecordWriter`'s output).
"""

from __future__ import annotations

import gzip
import struct
from typing import Any

import apache_beam as beam
import google_crc32c
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C: rotate right by 15 bits, add a constant (mod 2**32)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_records(records: list[bytes]) -> bytes:
    """The TFRecord framing of `records`, uncompressed, as one bytes object."""
    parts: list[bytes] = []
    for record in records:
        length = struct.pack("<Q", len(record))
        parts += (length, struct.pack("<I", masked_crc32c(length)), record, struct.pack("<I", masked_crc32c(record)))
    return b"".join(parts)


class GzipFile:
    """A gzip stream over a Beam file handle; closing it closes both."""

    def __init__(self, raw: Any, level: int):
        self._raw = raw
        self._gzip = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level, mtime=0)

    def write(self, data: bytes) -> None:
        self._gzip.write(data)

    def close(self) -> None:
        self._gzip.close()
        self._raw.close()


class TFRecordBatchSink(filebasedsink.FileBasedSink):
    """A gzip TFRecord sink whose elements are lists of serialized records (one list per batch).

    Same files as `WriteToTFRecord(compression_type=GZIP)`, but each batch is framed in one go and
    compressed at level 1 (Beam's is fixed at 6): on our examples level 6 took ~2.5x the time for
    files ~12% smaller.
    """

    GZIP_LEVEL = 1

    def __init__(self, file_path_prefix: str, file_name_suffix: str):
        super().__init__(
            file_path_prefix,
            coder=beam.coders.BytesCoder(),
            file_name_suffix=file_name_suffix,
            mime_type="application/octet-stream",
            compression_type=CompressionTypes.UNCOMPRESSED,  # compressed by open() below
        )

    def open(self, temp_path: str) -> GzipFile:
        return GzipFile(super().open(temp_path), self.GZIP_LEVEL)

    def write_record(self, file_handle: Any, value: list[bytes]) -> None:
        file_handle.write(frame_records(value))
