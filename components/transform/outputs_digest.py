"""What a TRANSFORM_DIR holds, as a comparable summary: two runs of the job agree iff these agree.

Used by the parallel-equality tests (tests/transform/test_parallel_direct_runner.py) and the
throughput benchmark to check that a runner or a worker count changes nothing but the speed. Shard
files and their order depend on the runner, so examples are compared as a multiset (sorted
SHA-256 of each serialized tf.Example), dead letters as sorted lines, vocabularies file by file.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from typing import Any

from homefeed.layout import transform_dir as layout


def read_tfrecords(path: str) -> Iterator[bytes]:
    """The records of one gzip TFRecord file (framing as in tfrecord_sink.py; CRCs not checked)."""
    with gzip.open(path, "rb") as f:
        while header := f.read(12):
            if len(header) != 12:
                raise ValueError(f"{path}: truncated record header")
            (length,) = struct.unpack("<Q", header[:8])
            data = f.read(length + 4)
            if len(data) != length + 4:
                raise ValueError(f"{path}: truncated record")
            yield data[:length]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def examples_digest(transform_dir: str, split: str) -> dict[str, Any]:
    """{"count", "sha256"}: the number of examples of `split` and a digest of their sorted hashes."""
    hashes = sorted(
        _sha(record)
        for path in glob.glob(os.path.join(transform_dir, split, layout.EXAMPLES_PREFIX + "*"))
        for record in read_tfrecords(path)
    )
    return {"count": len(hashes), "sha256": _sha("\n".join(hashes).encode())}


def transform_dir_digest(transform_dir: str) -> dict[str, Any]:
    """The comparable content of a finished TRANSFORM_DIR (local path).

    Returns:
      {"summary": records in/valid/out/dead letters by reason/vocabulary sizes,
       "examples": {split: {"count", "sha256"}}, "dead_letters": sha256 of the sorted lines,
       "vocabularies": {asset file name: sha256}}.
    """
    with open(os.path.join(transform_dir, layout.SUMMARY_FILE)) as f:
        summary = json.load(f)
    dead = sorted(
        line
        for path in glob.glob(os.path.join(transform_dir, layout.DEAD_LETTER_DIR, "*"))
        for line in open(path, encoding="utf-8").read().splitlines()
    )
    assets = os.path.join(transform_dir, "transform_fn", "assets")
    vocabularies = {}
    for name in sorted(os.listdir(assets)) if os.path.isdir(assets) else []:
        with open(os.path.join(assets, name), "rb") as f:
            vocabularies[name] = _sha(f.read())
    return {
        "summary": {
            key: summary[key]
            for key in ("records_in", "valid", "records_out", "dead_lettered_by_reason", "vocabulary_sizes")
        },
        "examples": {split: examples_digest(transform_dir, split) for split in layout.SPLIT_DIRS},
        "dead_letters": {"count": len(dead), "sha256": _sha("\n".join(dead).encode())},
        "vocabularies": vocabularies,
    }
