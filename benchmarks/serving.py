"""Benchmark of the candidate service: end-to-end latency over HTTP on loopback, by corpus size.

For each corpus size (default 10^5 and 10^6 articles) this
  1. makes a model directory from a trained one (`--model`): the same SavedModel, user histories,
     titles and popular list, with the real article vectors plus synthetic ones up to the size
     (default "neighbours": perturbed copies of real articles, as close to their source as real
     articles are to their nearest neighbour, noise shaped by the real covariance; `--synthetic
     gauss`: one Gaussian fitted to the real vectors, a harder case without cluster structure);
  2. builds the index with `candidates build-index` defaults (IVF-Flat above 50,000 articles,
     nprobe tuned until recall@200 against exact search on real user vectors reaches 0.98) and
     records build time and recall;
  3. starts `candidates serve` on a free loopback port in a subprocess (one worker unless told),
     waits for /readyz and reads its resident memory;
  4. drives it with a bounded load generator (a fixed number of requests and a time limit, keep-
     alive HTTP/1.1 connections, loopback only) at each concurrency (default 1 and 8), asking
     `GET /v1/users/{user}/candidates?k=200` for real users with a history, round robin;
  5. prints p50/p95/p99 latency, requests/s and errors, and where the time goes: the service's
     Server-Timing header splits each answer into store / encode (the SavedModel call) / search
     (FAISS) / filter / serialize (JSON); the rest of the client-measured time is HTTP (the client,
     the loopback socket, uvicorn and FastAPI routing/validation).

Targets (2-core machine, 10^6 articles, k=200): index recall@200 >= 0.98; concurrency 1
p99 <= 5 ms; concurrency 16 >= 1,000 requests/s, 0 errors, p99 <= 25 ms; each extra worker adds
<= 150 MB of memory of its own (`--workers N`: gunicorn's master loads the model before it forks,
the index is memory-mapped, the workers share both; `memory_by_process` says what is counted).

Usage:
  python benchmarks/serving.py --model MODEL_DIR [--histories EXTRACT_DIR/user_histories.parquet]
      [--sizes 100000 1000000] [--concurrency 1 16] [--workers N] [--requests 3000] [--duration 60] [--json OUT]
      [--memory-only] [--workdir DIR --reuse]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# `python benchmarks/serving.py` puts benchmarks/ first on sys.path, where this file would shadow
# the `serving` package it measures.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from serving.query import wait_until_ready  # noqa: E402  (after the sys.path fix above)

LOG = logging.getLogger("benchmarks.serving")
# Runs `candidates` with only the serving commands registered: the benchmark does not depend on
# other stages' CLI modules importing.
LAUNCHER = "import sys, homefeed_cli.cli as c; c.COMMAND_MODULES = ('serving.cli',); sys.exit(c.main())"
STAGES = ("store", "encode", "search", "filter", "serialize")


# ---------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------
def nearest_neighbour_cosine(real: np.ndarray, sample: int = 2000, seed: int = 0) -> float:
    """Median cosine between a real article vector and its nearest other real article."""
    rng = np.random.default_rng(seed)
    unit = real / np.maximum(np.linalg.norm(real, axis=1, keepdims=True), 1e-12)
    picked = unit[rng.choice(len(unit), size=min(sample, len(unit)), replace=False)]
    cosines = picked @ unit.T
    cosines[cosines > 1 - 1e-6] = -1  # the article itself (and exact duplicates)
    return float(np.median(cosines.max(axis=1)))


def synthetic_vectors(real: np.ndarray, count: int, kind: str, rng: np.random.Generator):
    """`count` synthetic article vectors shaped like `real` (`float32 [count, d]`), in chunks.

    kind "neighbours" (default): a random real vector plus noise drawn from the real vectors'
    covariance, scaled so a synthetic article is as close to its source as real articles are to
    their nearest real neighbour (median cosine). This keeps both the trained vectors' effective
    dimension and their local cluster structure: new listings that resemble existing ones.
    kind "gauss": drawn from one Gaussian with the real mean and covariance (same effective
    dimension, no cluster structure: harder for approximate search). Each vector is rescaled to
    a random real vector's norm.
    """
    d = real.shape[1]
    norms = np.linalg.norm(real, axis=1)
    factor = np.linalg.cholesky(np.cov(real.T) + 1e-6 * np.eye(d))
    mean = real.mean(axis=0)
    scale = 1.0
    if kind == "neighbours":
        target = nearest_neighbour_cosine(real)
        probe = real[rng.integers(0, len(real), 2000)]
        noise = rng.standard_normal((2000, d)) @ factor.T
        low, high = 0.0, 4.0  # bisect the noise scale: cosine to the source falls as it grows
        for _ in range(30):
            scale = (low + high) / 2
            moved = probe + scale * noise
            cos = np.sum(probe * moved, axis=1) / (np.linalg.norm(probe, axis=1) * np.linalg.norm(moved, axis=1))
            low, high = (scale, high) if np.median(cos) > target else (low, scale)
        LOG.info(
            "synthetic articles: covariance noise x%.3f, median cosine to source %.3f (real nearest-neighbour %.3f)",
            scale,
            float(np.median(cos)),
            target,
        )
    elif kind != "gauss":
        raise ValueError(f"unknown synthetic kind {kind!r}")
    for start in range(0, count, 100_000):
        n = min(100_000, count - start)
        noise = rng.standard_normal((n, d)) @ factor.T
        out = mean + noise if kind == "gauss" else real[rng.integers(0, len(real), n)] + scale * noise
        out *= (norms[rng.integers(0, len(real), n)] / np.maximum(np.linalg.norm(out, axis=1), 1e-12))[:, None]
        yield out.astype(np.float32)


def make_corpus_model(
    source: Path, target: Path, size: int, histories: Path | None, kind: str = "neighbours", seed: int = 0
) -> dict[str, Any]:
    """A model directory at `target` with `size` article vectors: the real ones, then synthetic ones."""
    from serving.versions import files as model_files

    manifest = model_files.read_model_manifest(source)
    real = np.load(source / model_files.ARTICLE_VECTORS_FILE).astype(np.float32)
    ids = model_files.read_article_ids(source)
    if size < len(ids):
        raise ValueError(f"corpus size {size} is smaller than the model's {len(ids)} real articles")
    target.mkdir(parents=True)
    shutil.copytree(source / "saved_model", target / "saved_model")
    from homefeed.layout.model_dir import NUMPY_TOWERS_DIR

    if (source / NUMPY_TOWERS_DIR).is_dir():  # the towers without TensorFlow, when exported with them
        shutil.copytree(source / NUMPY_TOWERS_DIR, target / NUMPY_TOWERS_DIR)
    for name in (model_files.ARTICLES_FILE, model_files.POPULAR_FILE):
        if (source / name).exists():
            shutil.copy2(source / name, target / name)
    history_file = histories or source / model_files.HISTORIES_FILE
    if not history_file.exists():
        raise FileNotFoundError("no user histories: pass --histories (the extract's user_histories.parquet)")
    shutil.copy2(history_file, target / model_files.HISTORIES_FILE)

    rng = np.random.default_rng(seed)
    extra = size - len(ids)
    vectors = np.empty((size, real.shape[1]), dtype=np.float32)
    vectors[: len(ids)] = real
    row = len(ids)
    for chunk in synthetic_vectors(real, extra, kind, rng):
        vectors[row : row + len(chunk)] = chunk
        row += len(chunk)
    np.save(target / model_files.ARTICLE_VECTORS_FILE, vectors)
    width = len(str(extra))
    with open(target / model_files.ARTICLE_IDS_FILE, "w") as handle:
        handle.writelines(f"{a}\n" for a in ids)
        handle.writelines(f"synthetic-{i:0{width}d}\n" for i in range(extra))
    # A manifest the trainer's own check accepts: every file with its size and hash.
    files = {
        path.relative_to(target).as_posix(): {"bytes": path.stat().st_size, "sha256": model_files.sha256_file(path)}
        for path in sorted(target.rglob("*"))
        if path.is_file()
    }
    bench = {
        **manifest,
        "model_version": f"{manifest['model_version']}-bench{size}",
        "num_articles": size,
        model_files.VECTORS_HASH_KEY: files[model_files.ARTICLE_VECTORS_FILE]["sha256"],
        "files": files,
        "benchmark_corpus": {
            "real_articles": len(ids),
            "synthetic_articles": extra,
            "kind": kind,
            "source": str(source),
        },
    }
    (target / model_files.MANIFEST_FILE).write_text(json.dumps(bench, indent=2))
    return bench


def bench_users(model_dir: Path, limit: int = 5000) -> list[str]:
    from serving.store import read_histories

    users = [user for user, row in read_histories(model_dir / "user_histories.parquet") if row["history"]]
    return users[:limit]


# ---------------------------------------------------------------------------------------------
# Service process
# ---------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` and its children (gunicorn's workers), MiB, from /proc."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def memory_by_process(pid: int) -> list[dict[str, float]]:
    """Per process of the service (gunicorn's master, then its workers): RSS, PSS and private MiB.

    Private (Private_Clean + Private_Dirty from /proc/PID/smaps_rollup): pages no other process
    maps right now. That includes clean pages of a memory-mapped file that only this worker has
    touched so far (the index, the shared article arrays): page cache, which the next worker maps
    too rather than copies. Private dirty (anonymous memory: Python objects, numpy arrays, malloc)
    is what one more worker cannot share, the figure the target is checked against. PSS splits
    each shared page between the processes that map it.
    """
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    rows = []
    for p in pids:
        fields = {}
        for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines()[1:]:
            name, _, value = line.partition(":")
            fields[name] = int(value.split()[0]) / 1024 if value.strip() else 0.0
        rows.append(
            {
                "pid": p,
                "rss_mib": round(fields.get("Rss", 0.0), 1),
                "pss_mib": round(fields.get("Pss", 0.0), 1),
                "private_mib": round(fields.get("Private_Clean", 0.0) + fields.get("Private_Dirty", 0.0), 1),
                "private_dirty_mib": round(fields.get("Private_Dirty", 0.0), 1),
                "anonymous_mib": round(fields.get("Anonymous", 0.0), 1),
            }
        )
    return rows


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by `pid` and its children (gunicorn's workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    total = 0.0
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def start_service(model_dir: Path, port: int, workers: int, log_path: Path, encoder: str = "auto") -> subprocess.Popen:
    log = open(log_path, "w")
    command = [
        sys.executable,
        "-c",
        LAUNCHER,
        "serve",
        "--model",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-watch",
        "--encoder",
        encoder,
    ]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_for_workers(port: int, workers: int, timeout_s: float = 600) -> None:
    """Until `workers` different worker processes answered /readyz (each loads its own model)."""
    import urllib.request

    seen: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(seen)} of {workers} workers ready after {timeout_s:.0f}s")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/readyz", headers={"Connection": "close"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                seen.add(json.loads(response.read()).get("worker_pid"))
        except OSError:
            time.sleep(0.5)


def stop_service(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


# ---------------------------------------------------------------------------------------------
# Load generator: raw keep-alive HTTP/1.1 over asyncio (cheaper than an HTTP library, so the
# client adds as little as possible to the measured latency).
# ---------------------------------------------------------------------------------------------
async def _connection(port: int, paths: list[str], next_index, stop_at: float, results: list, errors: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            i = next_index()
            if i is None or time.perf_counter() > stop_at:
                return
            request = f"GET {paths[i % len(paths)]} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
            started = time.perf_counter()
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
            except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                errors.append(f"{type(error).__name__}: {error}")
                return
            elapsed = time.perf_counter() - started
            if status != 200:
                errors.append(f"HTTP {status}: {body[:200]!r}")
                continue
            timing = {}
            for part in headers.get("server-timing", "").split(","):
                name, _, duration = part.strip().partition(";dur=")
                if duration:
                    timing[name] = float(duration) / 1000
            results.append((elapsed, timing, body.count(b'"article_id"')))
    finally:
        writer.close()


async def _drive(port: int, paths: list[str], concurrency: int, requests: int, duration_s: float):
    counter = iter(range(requests))

    def next_index():
        return next(counter, None)

    results: list = []
    errors: list = []
    started = time.perf_counter()
    await asyncio.gather(
        *(_connection(port, paths, next_index, started + duration_s, results, errors) for _ in range(concurrency))
    )
    return results, errors, time.perf_counter() - started


def run_load(port: int, paths: list[str], concurrency: int, requests: int, duration_s: float, warmup: int) -> dict:
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    runner(_drive(port, paths, 1, warmup, 60))  # warm caches, connections, lazy paths
    results, errors, wall = runner(_drive(port, paths, concurrency, requests, duration_s))
    latencies = np.array([r[0] for r in results]) * 1000
    split = {}
    for stage in STAGES:
        values = [r[1].get(stage, 0.0) * 1000 for r in results]
        split[stage] = statistics.median(values) if values else float("nan")
    server = np.array([sum(r[1].values()) for r in results]) * 1000
    http = latencies - server
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "errors": len(errors),
        "error_examples": errors[:3],
        "seconds": round(wall, 2),
        "requests_per_s": round(len(results) / wall, 1) if wall else 0.0,
        "p50_ms": round(float(np.percentile(latencies, 50)), 3) if len(results) else None,
        "p95_ms": round(float(np.percentile(latencies, 95)), 3) if len(results) else None,
        "p99_ms": round(float(np.percentile(latencies, 99)), 3) if len(results) else None,
        "max_ms": round(float(latencies.max()), 3) if len(results) else None,
        "median_split_ms": {
            **{k: round(v, 3) for k, v in split.items()},
            "http_and_framework": round(float(np.median(http)), 3) if len(results) else None,
        },
        "mean_candidates": round(float(np.mean([r[2] for r in results])), 1) if results else 0,
    }


# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="a trained model directory (candidates train)")
    parser.add_argument("--histories", type=Path, help="user_histories.parquet if the model dir has none")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--requests", type=int, default=3000, help="requests per concurrency level (bound)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per concurrency level (bound)")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--encoder",
        default="auto",
        choices=("auto", "numpy", "saved_model"),
        help="serve --encoder: the towers in NumPy (a model exported with them) or the SavedModel",
    )
    parser.add_argument("--index-type", default="auto", choices=("auto", "flat", "hnsw", "ivf"))
    parser.add_argument(
        "--synthetic",
        choices=("neighbours", "gauss"),
        default="neighbours",
        help="how synthetic article vectors are made (see synthetic_vectors)",
    )
    parser.add_argument("--hnsw-ef-construction", type=int, default=None, help="override IndexConfig's")
    parser.add_argument("--workdir", type=Path, help="keep the corpora here (default: a temporary directory)")
    parser.add_argument("--reuse", action="store_true", help="reuse corpora and indexes already in --workdir")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="no load levels: start the service, send the --warmup requests (2 connections per worker), "
        "read each process's memory",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from components.build_index.build import build_model_index
    from homefeed.config import IndexConfig

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="serving-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": f"{os.cpu_count()} cores", "model": str(args.model), "k": args.k, "sizes": []}
    report["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    report["synthetic"] = args.synthetic
    try:
        for size in args.sizes:
            target = workdir / f"corpus-{size}"
            if args.reuse and (target / "index" / "index_manifest.json").exists():
                LOG.info("reusing the corpus and index in %s", target)
                index = json.loads((target / "index" / "index_manifest.json").read_text())
            else:
                if target.exists():
                    shutil.rmtree(target)
                LOG.info("corpus of %d articles in %s", size, target)
                make_corpus_model(args.model, target, size, args.histories, kind=args.synthetic)
                config = IndexConfig(index_type=args.index_type)
                if args.hnsw_ef_construction:
                    config.hnsw_ef_construction = args.hnsw_ef_construction
                index = build_model_index(target, config)
            users = bench_users(target)
            paths = [f"/v1/users/{u}/candidates?k={args.k}" for u in users]
            port = free_port()
            log_path = workdir / f"serve-{size}.log"
            process = start_service(target, port, args.workers, log_path, args.encoder)
            try:
                ready = wait_until_ready(
                    f"http://127.0.0.1:{port}", process, timeout_s=600, poll_s=0.5, log_path=log_path
                )
                wait_for_workers(port, args.workers)
                entry = {
                    "articles": size,
                    "index_type": index["index_type"],
                    "search_params": index["search_params"],
                    "index_recall@200": index.get("recall@200"),
                    "recall_queries": index["recall_queries"],
                    "recall_query_source": index["recall_query_source"],
                    "index_search_ms_p50": index["search_ms_p50"],
                    "index_build_s": index["build_seconds"],
                    "recall_tuning_s": index["recall_seconds"],
                    "rss_mib_idle": round(rss_mib(process.pid), 1),
                    "model_version": ready["model_version"],
                    "encoder": ready.get("encoder", "saved_model"),
                    "loads": [],
                }
                if args.memory_only:
                    # the warm-up requests only, over several connections so that every worker answers some
                    run_load(port, paths, 2 * args.workers, args.warmup, args.duration, 0)
                for concurrency in [] if args.memory_only else args.concurrency:
                    LOG.info("load: %d articles, concurrency %d", size, concurrency)
                    cpu_before = cpu_seconds(process.pid)
                    load = run_load(port, paths, concurrency, args.requests, args.duration, args.warmup)
                    # CPU the service burnt per answer: unlike latency, not inflated by other
                    # processes competing for the cores (warm-up requests included, so slightly high).
                    served = load["requests"] + args.warmup
                    load["server_cpu_ms_per_request"] = round(
                        (cpu_seconds(process.pid) - cpu_before) * 1000 / served, 3
                    )
                    load["load_average"] = [round(x, 2) for x in os.getloadavg()]
                    entry["loads"].append(load)
                entry["rss_mib_after_load"] = round(rss_mib(process.pid), 1)
                entry["workers"] = args.workers
                entry["memory_by_process"] = memory_by_process(process.pid)
                entry["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
            finally:
                stop_service(process)
            report["sizes"].append(entry)
            print_entry(entry)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print_summary(report)
    return 0


def print_entry(entry: dict[str, Any]) -> None:
    print(
        f"\n== {entry['articles']:,} articles: {entry['index_type']} {entry['search_params']}, "
        f"recall@200 vs exact {entry['index_recall@200']} ({entry['recall_queries']} {entry['recall_query_source']} "
        f"queries, {entry['index_search_ms_p50']:.2f} ms/search), build {entry['index_build_s']:.1f}s (+{entry['recall_tuning_s']:.1f}s recall check), "
        f"RSS {entry['rss_mib_idle']:.0f} MiB idle / {entry['rss_mib_after_load']:.0f} MiB after load; "
        f"machine load average {entry['load_average_after']} (other processes compete for the cores)"
    )
    print(
        f"{'conc':>4} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'cpu ms/req':>10}   median split (ms)"
    )
    for load in entry["loads"]:
        split = "  ".join(f"{k} {v}" for k, v in load["median_split_ms"].items())
        print(
            f"{load['concurrency']:>4} {load['requests']:>8} {load['errors']:>6} {load['requests_per_s']:>8} "
            f"{load['p50_ms']:>8} {load['p95_ms']:>8} {load['p99_ms']:>8} {load['server_cpu_ms_per_request']:>10}   {split}"
        )
        if load["error_examples"]:
            print(f"     errors, e.g.: {load['error_examples']}")
    print(
        f"memory after load, {entry['workers']} worker(s) (private dirty = what one more worker adds; the index and the article arrays are shared):"
    )
    for row in entry["memory_by_process"]:
        print(
            f"  pid {row['pid']:>7}: RSS {row['rss_mib']:8.1f} MiB  PSS {row['pss_mib']:8.1f} MiB  private {row['private_mib']:8.1f} MiB"
            f"  (dirty {row.get('private_dirty_mib', float('nan')):7.1f} MiB, anonymous {row.get('anonymous_mib', float('nan')):7.1f} MiB)"
        )


def print_summary(report: dict[str, Any]) -> None:
    print(
        f"\nTargets ({report['machine']}, 10^6 articles, k=200): recall@200 >= 0.98; c=1 p99 <= 5 ms; "
        "c=16 >= 1,000 requests/s, p99 <= 25 ms, 0 errors; one more worker <= 150 MB private dirty"
    )
    for entry in report["sizes"]:
        big = entry["articles"] >= 1_000_000
        for load in entry["loads"]:
            misses = []
            if (entry["index_recall@200"] or 0) < 0.98:
                misses.append("recall")
            if load["errors"]:
                misses.append("errors")
            if big and load["concurrency"] == 1 and (load["p99_ms"] or 1e9) > 5:
                misses.append("p99")
            if big and load["concurrency"] >= 16 and ((load["p99_ms"] or 1e9) > 25 or load["requests_per_s"] < 1000):
                misses.append("throughput/p99")
            print(
                f"  {entry['articles']:>9,} articles  c={load['concurrency']}: {load['requests_per_s']} req/s, "
                f"p99 {load['p99_ms']} ms, {load['errors']} errors, recall {entry['index_recall@200']}  "
                f"{'OK' if not misses else 'MISSED: ' + ', '.join(misses)}"
            )
        # The workers: the service's children holding a model (gunicorn's master, the first row, loaded the
        # model they share; a helper process without a model is not a worker).
        rows = entry["memory_by_process"][1:]
        workers = [row for row in rows if row["rss_mib"] > 100] if entry["workers"] > 1 else []
        if workers:
            worst = max(row["private_dirty_mib"] * 1.048576 for row in workers)
            touched = max(row["private_mib"] * 1.048576 for row in workers)
            print(
                f"  one more worker adds up to {worst:.0f} MB of its own (private dirty)  {'OK' if worst <= 150 else 'MISSED'}; "
                f"private incl. shared-file pages only it has touched so far: up to {touched:.0f} MB"
            )


if __name__ == "__main__":
    sys.exit(main())
