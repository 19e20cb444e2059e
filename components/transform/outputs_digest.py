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
    """The examples of `split`: {"count", "sha256", "exact_sha256", "float_sums"}.

    `exact_sha256` covers the serialized examples byte for byte. Float features come from TF
    Transform's statistics (e.g. the age's mean and variance), whose sums run in whatever order
    the workers combine them, so they may differ in the last bits between worker counts: `sha256`
    covers every example with its float features left out, and `float_sums` gives each float
    feature's sum over the split (compare with a tolerance).
    """
    from tensorflow.core.example import example_pb2

    exact, rest = [], []
    float_sums: dict[str, float] = {}
    for path in glob.glob(os.path.join(transform_dir, split, layout.EXAMPLES_PREFIX + "*")):
        for record in read_tfrecords(path):
            exact.append(_sha(record))
            example = example_pb2.Example.FromString(record)
            for name, feature in example.features.feature.items():
                if feature.WhichOneof("kind") == "float_list":
                    float_sums[name] = float_sums.get(name, 0.0) + float(sum(feature.float_list.value))
                    example.features.feature[name].ClearField("float_list")
            rest.append(_sha(example.SerializeToString(deterministic=True)))
    return {
        "count": len(exact),
        "sha256": _sha("\n".join(sorted(rest)).encode()),
        "exact_sha256": _sha("\n".join(sorted(exact)).encode()),
        "float_sums": dict(sorted(float_sums.items())),
    }


def same_outputs(a: dict[str, Any], b: dict[str, Any], rel_tol: float = 1e-6) -> list[str]:
    """What differs between two `transform_dir_digest`s (empty: the same outputs); float sums are
    compared within `rel_tol` and the byte-exact example digest is not compared (see above)."""
    import math

    differences = [key for key in ("summary", "dead_letters", "vocabularies") if a[key] != b[key]]
    for split in sorted(set(a["examples"]) | set(b["examples"])):
        x, y = a["examples"].get(split, {}), b["examples"].get(split, {})
        for key in ("count", "sha256"):
            if x.get(key) != y.get(key):
                differences.append(f"examples[{split}].{key}")
        sums_x, sums_y = x.get("float_sums", {}), y.get("float_sums", {})
        if set(sums_x) != set(sums_y) or any(
            not math.isclose(sums_x[k], sums_y[k], rel_tol=rel_tol, abs_tol=rel_tol * x.get("count", 1)) for k in sums_x
        ):
            differences.append(f"examples[{split}].float_sums")
    return differences


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
