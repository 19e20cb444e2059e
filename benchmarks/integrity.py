"""Benchmark: what verifying a version's files against their sha256 records costs (serving/versions/integrity.py).

The service hashes every file of a version before serving it, at start-up and on every reload,
on its reload thread (requests keep being answered). This measures that cost for a version of
N articles (default 10^6), d-dimensional vectors (default 64, the trainer's default):

  1. writes a model directory the way the real writers lay it out: article_vectors.npy
     (float32 [N, d], seeded random, L2-normalised), article_ids.txt, a manifest with the file
     table; an index built by FAISS (`--index-type flat`, default: IndexIDMap over IndexFlatIP, the
     same bytes as the vectors; `hnsw`: IndexHNSWFlat with M=32 as build-index uses above 50,000
     articles, about 1.5x the bytes, minutes to build on 2 cores) with its index manifest and hash;
  2. times `integrity.verify_version` over it `--repeat` times (files in the page cache, as right
     after a publish or copy) and prints the median seconds, bytes and MB/s;
  3. also times plain sha256 over the same bytes, for comparison.

Hashing is linear in bytes: the HNSW index of the same corpus adds its graph (M*2 int32 links per
article at level 0, about 256 MB at N=10^6, M=32), so its figure is the flat one scaled by bytes.

Usage: python benchmarks/integrity.py [--articles 1000000] [--dim 64] [--index-type flat] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from homefeed.layout.model_dir import sha256_file  # noqa: E402
from serving.versions import integrity  # noqa: E402


def write_version(root: Path, n: int, d: int, index_type: str) -> tuple[dict, dict]:
    import faiss

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, d), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    np.save(root / "article_vectors.npy", vectors)
    (root / "article_ids.txt").write_text("".join(f"a{i:07d}\n" for i in range(n)))
    files = {
        name: {"bytes": (root / name).stat().st_size, "sha256": sha256_file(root / name)}
        for name in ("article_vectors.npy", "article_ids.txt")
    }
    manifest = {"format_version": 1, "model_version": "bench", "files": files}
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "index").mkdir()
    started = time.perf_counter()
    inner = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT) if index_type == "hnsw" else faiss.IndexFlatIP(d)
    index = faiss.IndexIDMap(inner)
    index.add_with_ids(vectors, np.arange(n, dtype=np.int64))
    faiss.write_index(index, str(root / "index" / "articles.faiss"))
    print(f"built the {index_type} index over {n:,} vectors in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    path = root / "index" / "articles.faiss"
    index_manifest = {
        "model_version": "bench",
        "index_file": "articles.faiss",
        integrity.INDEX_BYTES_KEY: path.stat().st_size,
        integrity.INDEX_HASH_KEY: sha256_file(path),
    }
    return manifest, index_manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--articles", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--index-type", choices=("flat", "hnsw"), default="flat")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-integrity-") as tmp:
        root = Path(tmp) / "bench"
        root.mkdir()
        manifest, index_manifest = write_version(root, args.articles, args.dim, args.index_type)
        runs, report = [], None
        for _ in range(args.repeat):
            report = integrity.verify_version(root, manifest, root / "index", index_manifest, require_record=False)
            runs.append(report.seconds)
        plain = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            for name in report.hashes:
                digest = hashlib.sha256()
                with open(root / name, "rb") as handle:
                    while block := handle.read(1 << 20):
                        digest.update(block)
            plain.append(time.perf_counter() - started)
    seconds = statistics.median(runs)
    mib = report.bytes / 2**20
    print(f"| articles | d | index | files | MiB | verify (median of {args.repeat}) | MB/s | plain sha256 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {args.articles:,} | {args.dim} | {args.index_type} | {report.files} | {mib:,.0f} | {seconds:.2f} s "
        f"| {report.bytes / seconds / 1e6:,.0f} | {statistics.median(plain):.2f} s |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
