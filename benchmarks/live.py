"""Benchmark of the live feed: region-filtered search, and listing changes under load.

Part `filter` (library level, no HTTP; seeded synthetic data):
  1. makes `--size` clustered unit vectors of `--dim` (1,000 Gaussian clusters, like article
     vectors) and queries near a few of them (like user vectors: the mean of a few articles);
  2. builds the index as `candidates build-index` does (`--index-type`, default HNSW) and tunes
     efSearch / nprobe until unfiltered recall@k reaches IndexConfig.recall_floor (0.98), as the service's build does;
  3. gives each row a region, so regions cover `--shares` of the corpus (default 0.1 %, 1 %,
     10 %, 50 %; regions independent of the vectors, the hard case for a filtered graph search);
  4. for each share runs `serving.index.filtered.RegionIndex.search` (the service's code) on one
     thread and prints recall@k against exact filtered search (brute force over the allowed rows),
     p50/p99 milliseconds and the strategy picked (exact scan or FAISS IDSelectorBitmap).
  Targets: recall@200 >= 0.95 and p99 <= 10 ms for every share.

Part `service` (over HTTP on loopback; needs a trained model directory with its index, `--model`):
  1. starts `candidates serve` (two replicas sharing `--redis-url` when given);
  2. PUT -> visible: PUTs `--listings` new listings, each in a region of its own, and polls
     `GET /v1/users/{u}/candidates?region=<its region>` (on the other replica with Redis) until the
     listing is there; prints p50/max of the time from the PUT's answer to the first answer with it;
  3. GET latency at concurrency 1 for `--duration` seconds idle and as long while another process
     upserts listings at `--upserts-per-s` (default 100), in windows of `--window-ms` that
     alternate (so the machine's slow spells weigh on both alike); prints p50/p99 of both and
     their ratio. `--aa` runs the same with no upserts at all: the ratio then shows the
     measurement's own noise on this machine.
  3b. before that, the serving process's CPU per upsert (its /proc CPU time over `--cpu-seconds`
     of upserts, less as long idle), which hardly depends on the machine's load; with Redis also
     the reading replica's CPU per change it synced (a replica that takes no writes).
  With `--redis-url` the GETs go to a replica that takes none of the writes (the writes go to the
  other), the layout docs/live.md recommends when GET tail latency matters: it then pays only for
  syncing (a batch every `--live-sync-interval`), not for parsing and embedding each upsert.
  Targets: PUT -> visible < 1 s; p99 under upserts within 20 % of idle.

Usage:
  python benchmarks/live.py filter [--size 1000000] [--dim 64] [--index-type hnsw] [--queries 200]
      [--index-file F [--build-only]] [--sweep]   (build the 10^6 HNSW index once into F, reuse it)
  python benchmarks/live.py service --model MODEL_DIR [--histories PATH] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

# One BLAS / OpenMP thread, as one service request gets (set before numpy loads).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

# `python benchmarks/live.py` puts benchmarks/ first on sys.path; keep it from shadowing packages.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]


UPSERT_THREADS = 4
# `alternating_latencies`: GETs this soon after a switch between idle and loaded are not counted.
SETTLE_S = 0.015


def percentile(values, q) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


# ---------------------------------------------------------------------------------------------
# filter
# ---------------------------------------------------------------------------------------------
def clustered_vectors(n: int, d: int, rng, clusters: int = 1000) -> np.ndarray:
    centers = rng.normal(size=(clusters, d)).astype(np.float32)
    vectors = centers[rng.integers(0, clusters, n)] + 0.6 * rng.normal(size=(n, d)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def region_codes(n: int, shares: list[float], rng) -> np.ndarray:
    """Codes 0..len(shares)-1 covering those shares of the rows; the rest get code len(shares)."""
    counts = [int(round(s * n)) for s in shares]
    if sum(counts) > n:
        raise ValueError(f"shares {shares} add up to more than the corpus")
    codes = np.repeat(np.arange(len(shares) + 1, dtype=np.int32), [*counts, n - sum(counts)])
    return rng.permutation(codes)


def bench_filter(args) -> dict:
    import faiss

    from homefeed.config import IndexConfig
    from serving.index import faiss_index
    from serving.index.filtered import RegionIndex, exact_filtered_reference

    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    vectors = clustered_vectors(args.size, args.dim, rng)
    picks = rng.integers(0, args.size, (args.queries, 5))
    queries = vectors[picks].mean(axis=1) + 0.1 * rng.normal(size=(args.queries, args.dim)).astype(np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    config = IndexConfig(index_type=args.index_type, hnsw_ef_construction=args.ef_construction)
    faiss.omp_set_num_threads(args.build_threads or faiss.omp_get_max_threads())
    if args.index_file and args.index_file.exists():  # built earlier from the same seed/size/dim/config
        index = faiss.read_index(str(args.index_file))
        if index.ntotal != args.size or index.d != args.dim:
            raise SystemExit(f"{args.index_file} holds {index.ntotal} x {index.d}, not {args.size} x {args.dim}")
        faiss_index.set_search_params(
            index, faiss_index.SearchParams(ef_search=config.hnsw_ef_search, nprobe=config.ivf_nprobe)
        )
        print(f"read {args.index_file} (built earlier; build time not measured in this run)")
    else:
        index = faiss_index.build_index(vectors, args.index_type, config, seed=args.seed)
        if args.index_file:
            faiss.write_index(index, str(args.index_file))
    build_s = time.perf_counter() - started
    if args.build_only:
        print(f"built {args.index_type} over {args.size:,} x {args.dim} in {build_s:.0f}s")
        return {"build_s": round(build_s, 1)}
    exact = faiss_index.exact_search(vectors, queries, args.k)
    # Tuned to the floor the service's index is built to (IndexConfig.recall_floor), not below it.
    tuning = faiss_index.tune_search(index, queries, exact, args.k, config.recall_floor, config)
    print(
        f"{args.index_type} over {args.size:,} x {args.dim} built in {build_s:.0f}s; unfiltered recall@{args.k} "
        f"{tuning.recall:.3f} with {tuning.params.to_dict() or 'exact search'}"
    )
    codes = region_codes(args.size, args.shares, rng)
    regions = RegionIndex(index, vectors, codes, exact_share=args.exact_share)
    faiss.omp_set_num_threads(1)
    if args.sweep:
        sweep_broad(regions, vectors, codes, queries, args)
    rows = []
    for code, share in enumerate(args.shares):
        timings, recalls = [], []
        # Ground truth first, so the timed searches run back to back as a service's do (a brute
        # force over 10^6 rows, with its 128 MB temporaries, between two timed searches made
        # their p99 swing from 8 to 260 ms on the shared VM).
        truths = [exact_filtered_reference(vectors, codes, query, args.k, [code])[1] for query in queries]
        for query, truth in zip(queries, truths):
            t0 = time.perf_counter()
            _, found, strategy = regions.search(query, args.k, [code])
            timings.append(time.perf_counter() - t0)
            recalls.append(len(set(found.tolist()) & set(truth.tolist())) / max(len(truth), 1))
        rows.append(
            {
                "share": share,
                "allowed": int((codes == code).sum()),
                "strategy": strategy,
                f"recall@{args.k}": round(float(np.mean(recalls)), 4),
                "min_recall": round(float(np.min(recalls)), 4),
                "p50_ms": round(percentile(timings, 50), 3),
                "p99_ms": round(percentile(timings, 99), 3),
            }
        )
    print(
        f"\n{'share':>7} {'allowed':>9} {'strategy':>9} {'recall@' + str(args.k):>11} {'min':>6} {'p50 ms':>8} {'p99 ms':>8}"
    )
    for r in rows:
        print(
            f"{r['share'] * 100:>6.1f}% {r['allowed']:>9,} {r['strategy']:>9} {r[f'recall@{args.k}']:>11.4f} "
            f"{r['min_recall']:>6.3f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}"
        )
    ok = all(r[f"recall@{args.k}"] >= 0.95 and r["p99_ms"] <= 10 for r in rows)
    print(
        f"\ntargets (recall@{args.k} >= 0.95, p99 <= 10 ms at concurrency 1): {'met' if ok else 'NOT met'}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    return {
        "index_type": args.index_type,
        "size": args.size,
        "dim": args.dim,
        "build_s": round(build_s, 1),
        "unfiltered_recall": round(tuning.recall, 4),
        "search_params": tuning.params.to_dict(),
        "rows": rows,
    }


def sweep_broad(regions, vectors, codes, queries, args) -> list[dict]:
    """Strategies for the broad filters (--sweep-shares), each at several settings, one thread:

    * exact: inner products over every allowed row (what selective filters use);
    * selector: the graph search restricted by `IDSelectorBitmap` at efSearch `ef`;
    * overfetch: the plain (unfiltered) graph search for k' = k * `f` / share rows at efSearch
      max(tuned, k'), then the allowed ones kept.
    """
    import faiss

    from serving.index import faiss_index
    from serving.index.filtered import exact_filtered_reference

    base = faiss_index.base_index(regions.index)
    tuned, k, found = int(base.hnsw.efSearch), args.k, []
    print(
        f"\nsweep of broad-filter strategies (tuned unfiltered efSearch {tuned}, k={k}, {len(queries)} queries, one thread)"
    )
    print(f"{'share':>6} {'strategy':>10} {'setting':>10} {'recall':>7} {'min':>6} {'p50 ms':>7} {'p99 ms':>7}")
    for share in args.sweep_shares:
        code = args.shares.index(share)
        truths = [exact_filtered_reference(vectors, codes, q, k, [code])[1] for q in queries]
        bitmap = regions.allowed_bitmap([code])
        allowed = np.isin(codes, [code])
        trials = (
            [("exact", None)]
            + [("selector", ef) for ef in args.sweep_ef]
            + [("overfetch", f) for f in args.sweep_overfetch]
        )
        for strategy, setting in trials:
            timings, recalls = [], []
            for query, truth in zip(queries, truths):
                t0 = time.perf_counter()
                if strategy == "exact":
                    _, rows = regions._exact(query, k, [code], np.zeros(0, np.int64))
                elif strategy == "selector":
                    params = faiss.SearchParametersHNSW(
                        sel=faiss.IDSelectorBitmap(regions.n, faiss.swig_ptr(bitmap)), efSearch=int(setting)
                    )
                    rows = regions.index.search(query[None, :], k, params=params)[1][0]
                else:
                    k_wide = int(np.ceil(k * setting / share))
                    params = faiss.SearchParametersHNSW(efSearch=max(tuned, k_wide))
                    rows = regions.index.search(query[None, :], k_wide, params=params)[1][0]
                    rows = rows[rows >= 0]
                    rows = rows[allowed[rows]][:k]
                timings.append(time.perf_counter() - t0)
                recalls.append(len(set(rows.tolist()) & set(truth.tolist())) / max(len(truth), 1))
            row = {
                "share": share,
                "strategy": strategy,
                "setting": setting,
                "recall": round(float(np.mean(recalls)), 4),
                "min_recall": round(float(np.min(recalls)), 3),
                "p50_ms": round(percentile(timings, 50), 2),
                "p99_ms": round(percentile(timings, 99), 2),
            }
            found.append(row)
            label = "" if setting is None else (f"ef {setting}" if strategy == "selector" else f"k' {setting}k/s")
            print(
                f"{share * 100:>5.1f}% {strategy:>10} {label:>10} {row['recall']:>7.4f} {row['min_recall']:>6.3f} "
                f"{row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f}",
                flush=True,
            )
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    return found


# ---------------------------------------------------------------------------------------------
# service
# ---------------------------------------------------------------------------------------------
def start(args, port: int, log: Path):
    import subprocess

    command = [sys.executable, "-m", "homefeed_cli", "serve", "--model", str(args.model), "--port", str(port)]
    if args.histories:
        command += ["--histories", str(args.histories)]
    if args.redis_url:
        command += ["--redis-url", args.redis_url, "--redis-prefix", "bench-live:"]
    handle = open(log, "w")
    return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)


def users_with_history(client, limit: int = 200) -> list[str]:
    found = []
    for i in range(limit * 20):
        for user in (f"u{i:06d}", f"u{i:04d}", str(i)):
            body = client.get(f"/v1/users/{user}/candidates", params={"k": 1}).json()
            if not body.get("fallback"):
                found.append(user)
                break
        if len(found) >= limit:
            break
    return found


class RawClient:
    """A blocking keep-alive HTTP/1.1 client over one socket: a few microseconds of Python per
    request, against about a millisecond for httpx, so the load generators on this (small) machine
    take as little CPU as possible from the service being measured.

    It connects at its first request and again whenever the service has closed the connection
    while it idled, as HTTP clients do with a stale pooled connection (GET and PUT are idempotent):
    the service closes a kept-alive connection idle for `keep_alive_s` (silently) and answers a
    connection that sent nothing for `header_timeout_s` with a 408 before closing it; the load's
    writers idle through the benchmark's idle windows."""

    def __init__(self, port: int):
        self.port = port
        self.sock = None
        self.buffer = b""

    def _connect(self) -> None:
        import socket

        self.sock = socket.create_connection(("127.0.0.1", self.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        head = f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {len(body)}\r\n"
        message = head.encode() + (b"content-type: application/json\r\n\r\n" if body else b"\r\n") + body
        if self.sock is None:
            self._connect()
        try:
            self.sock.sendall(message)
            answer = self._answer()
        except ConnectionError:  # closed while idle: nothing of this request was answered
            answer = None
        if answer is None or (answer[0] == 408 and answer[1].get("connection") == "close"):
            self.sock.close()
            self._connect()
            self.sock.sendall(message)
            answer = self._answer()
        return answer

    def _answer(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        raw_head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = raw_head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._read()
        answer, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split()[1]), headers, answer

    def _read(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the service closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def alternating_latencies(
    port: int, users, seconds: float, window_s: float, running, upserts, aa: bool = False
) -> dict:
    """GETs at concurrency 1 for `seconds` in idle windows and as long in loaded ones, alternating
    every `window_s`: the upsert writers (`upsert_process`, sharing the `running` Event and the
    `upserts` counter) run only in the loaded ones. With `aa` they never run: both kinds are idle, and the
    ratio of their p99s is this benchmark's own noise (an A/A test).

    Returns {"idle": (client seconds, service seconds), "loaded": (...), "loaded_s": seconds the
    loaded windows lasted, "upserts": upserts sent meanwhile, "idle_upserts": sent in idle windows
    (a check: 0)}. A GET started in the first SETTLE_S of a window is not counted: an upsert sent
    just before the switch may still be running, and the writers take a moment to resume."""
    client = RawClient(port)
    paths = [f"/v1/users/{user}/candidates?k=200" for user in users]
    kept = {"idle": ([], []), "loaded": ([], [])}
    loaded, loaded_s, counted, stray, i = False, 0.0, 0, 0, 0
    switched = time.monotonic()
    switch_at, start_count = switched + window_s, upserts.value
    try:
        while min(len(kept["idle"][0]), len(kept["loaded"][0])) == 0 or loaded_s < seconds or loaded:
            now = time.monotonic()
            if now >= switch_at:
                sent = upserts.value  # read once: an upsert sent between two reads would count nowhere
                if loaded:
                    running.clear()
                    loaded_s += now - switched
                    counted += sent - start_count
                else:
                    stray += sent - start_count  # sent in an idle window (a check: 0)
                    if not aa:
                        running.set()
                loaded, switched, switch_at, start_count = not loaded, now, now + window_s, sent
            t0 = time.perf_counter()
            status, headers, body = client.request("GET", paths[i % len(paths)])
            seconds_taken = time.perf_counter() - t0
            assert status == 200, body
            i += 1
            if now - switched < SETTLE_S:
                continue
            stages = headers.get("server-timing", "")
            timings, server = kept["loaded" if loaded else "idle"]
            timings.append(seconds_taken)
            server.append(sum(float(part.split("dur=")[1]) for part in stages.split(",") if "dur=" in part) / 1000)
    finally:
        running.clear()
        client.close()
    return {**kept, "loaded_s": loaded_s, "upserts": counted, "idle_upserts": stray}


def upsert_process(port: int, per_s: float, stop, counter, running=None) -> None:
    """UPSERT_THREADS writers, each at its share of `per_s`, until `stop` is set; with `running`
    (an Event), only while it is set. A writer waiting for it blocks (no polling), so the writers
    take no CPU from the service in the benchmark's idle windows."""

    def writer(worker: int) -> None:
        regions = ["north", "south", "east", "west"]
        client = RawClient(port)
        try:
            interval, next_at = UPSERT_THREADS / per_s, time.monotonic() + worker / per_s
            while not stop.is_set():
                if running is not None and not running.is_set():
                    running.wait(0.1)  # a bound, to see `stop`
                    next_at = time.monotonic() + worker / per_s  # resume on the schedule, no burst
                    continue
                time.sleep(max(0.0, next_at - time.monotonic()))
                if running is not None and not running.is_set():  # stopped while it slept: none in an idle window
                    continue
                with counter.get_lock():
                    n = counter.value
                    counter.value += 1
                body = json.dumps({"region": regions[n % 4], "category": "bench"}).encode()
                status, _, answer = client.request("PUT", f"/v1/articles/bench-load-{n}", body)
                if status != 200:
                    raise SystemExit(f"upsert answered {status}: {answer[:200]!r}")
                next_at += interval
        finally:
            client.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(UPSERT_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def upsert_cpu_ms(port: int, pid: int, per_s: float, seconds: float, reader_pid: int | None = None) -> dict:
    """The serving process's CPU per upsert: its CPU over `seconds` of upserts at `per_s` (and no
    GETs), less its CPU over as long idle (the sync loop), divided by the upserts it answered.
    With `reader_pid` (another replica, which learns the changes from Redis), that replica's CPU
    per change it synced, the same way. CPU time, unlike latency, hardly depends on how loaded the
    machine is."""
    pids = [pid] + ([reader_pid] if reader_pid else [])
    before = [process_cpu_s(p) for p in pids]
    time.sleep(seconds)
    idle = [process_cpu_s(p) - b for p, b in zip(pids, before)]
    stop, counter = multiprocessing.Event(), multiprocessing.Value("i", 0)
    writer = multiprocessing.Process(target=upsert_process, args=(port, per_s, stop, counter))
    before = [process_cpu_s(p) for p in pids]
    writer.start()
    time.sleep(seconds)
    stop.set()
    writer.join(timeout=30)
    time.sleep(0.5)  # the reader's last sync tick
    busy = [process_cpu_s(p) - b for p, b in zip(pids, before)]
    n = max(counter.value, 1)
    result = {
        "upserts": counter.value,
        "upserts_per_s": counter.value / seconds,
        "busy_cpu_ms": busy[0] * 1000,
        "idle_cpu_ms": idle[0] * 1000,
        "cpu_ms_per_upsert": (busy[0] - idle[0]) * 1000 / n,
    }
    if reader_pid:
        result["reader_cpu_ms_per_change"] = (busy[1] - idle[1]) * 1000 / n
    return result


def bench_service(args) -> dict:
    import tempfile

    import httpx

    from serving.query import wait_until_ready

    workdir = Path(tempfile.mkdtemp(prefix="bench-live-"))
    if args.redis_url:  # the replicas read histories from Redis: load the snapshot there first
        from serving.store import load_histories_to_redis
        from serving.versions import files as model_files

        snapshot = args.histories or model_files.resolve_model_dir(args.model).model_dir / "user_histories.parquet"
        load_histories_to_redis(snapshot, args.redis_url, prefix="bench-live:")
    ports = [find_port() for _ in range(2 if args.redis_url else 1)]
    processes = [start(args, port, workdir / f"serve-{port}.log") for port in ports]
    try:
        for port, process in zip(ports, processes):
            wait_until_ready(f"http://127.0.0.1:{port}", process, timeout_s=300, log_path=workdir / f"serve-{port}.log")
        writer = httpx.Client(base_url=f"http://127.0.0.1:{ports[0]}", timeout=30)
        reader = httpx.Client(base_url=f"http://127.0.0.1:{ports[-1]}", timeout=30)
        users = users_with_history(reader, 100)
        if not users:
            raise SystemExit("no user with a history found (give --histories)")
        visible = []
        for i in range(args.listings):
            region, article = f"bench-region-{time.time_ns()}-{i}", f"bench-new-{time.time_ns()}-{i}"
            answer = writer.put(f"/v1/articles/{article}", json={"region": region, "category": "bench", "title": "new"})
            assert answer.status_code == 200, answer.text
            t0 = time.perf_counter()
            while True:
                got = reader.get(
                    f"/v1/users/{users[i % len(users)]}/candidates", params={"k": 10, "region": region}
                ).json()
                if any(c["article_id"] == article for c in got["candidates"]):
                    visible.append(time.perf_counter() - t0)
                    break
                if time.perf_counter() - t0 > 10:
                    raise SystemExit(f"listing {article} not visible after 10 s")
                time.sleep(0.002)
        print(
            f"PUT -> visible ({'other replica via Redis' if args.redis_url else 'same replica'}), {args.listings} listings: "
            f"p50 {percentile(visible, 50):.1f} ms, max {max(visible) * 1000:.1f} ms"
        )
        reader_pid = processes[-1].pid if len(processes) > 1 else None
        cpu = upsert_cpu_ms(ports[0], processes[0].pid, args.upserts_per_s, args.cpu_seconds, reader_pid)
        print(
            f"service CPU per upsert at {cpu['upserts_per_s']:.0f}/s: {cpu['cpu_ms_per_upsert']:.2f} ms "
            f"({cpu['busy_cpu_ms']:.0f} ms CPU for {cpu['upserts']} upserts in {args.cpu_seconds:.0f} s, "
            f"less {cpu['idle_cpu_ms']:.0f} ms when idle for as long)"
        )
        if reader_pid:
            print(f"the other replica's CPU per change it synced from Redis: {cpu['reader_cpu_ms_per_change']:.3f} ms")
        # Idle and loaded windows alternate every `--window-ms`, so the machine's slow spells
        # (on the development VM they last a fraction of a second to a second and slow every
        # request alike, docs/live.md) fall on both alike instead of on whichever window they hit.
        stop, running, upserts = multiprocessing.Event(), multiprocessing.Event(), multiprocessing.Value("i", 0)
        # The writers run in their own process, so the GIL of this (measuring) process stays free.
        writer_process = multiprocessing.Process(
            target=upsert_process, args=(ports[0], args.upserts_per_s, stop, upserts, running)
        )
        writer_process.start()
        try:
            time.sleep(0.5)  # the writers connected and waiting
            got = alternating_latencies(
                ports[-1], users, args.duration, args.window_ms / 1000, running, upserts, aa=args.aa
            )
        finally:
            stop.set()
            writer_process.join(timeout=30)
            if writer_process.is_alive():
                writer_process.kill()
        (idle, idle_server), (loaded, loaded_server) = got["idle"], got["loaded"]
        loaded_s, loaded_count = got["loaded_s"], got["upserts"]
        rate = loaded_count / loaded_s
        if writer_process.exitcode not in (0, None) or (rate < 0.9 * args.upserts_per_s and not args.aa):
            raise SystemExit(
                f"the upsert load fell short: {rate:.1f} upserts/s of {args.upserts_per_s:g} (writer "
                f"process exit code {writer_process.exitcode}); the ratio would not mean what it says"
            )
        ratio = percentile(loaded, 99) / percentile(idle, 99)
        print(
            f"GET k=200 at concurrency 1, {args.duration:.0f} s each, in alternating windows of {args.window_ms:g} ms:"
        )
        print(
            f"  idle          p50 {percentile(idle, 50):6.2f} ms  p99 {percentile(idle, 99):6.2f} ms  "
            f"(in the service: p50 {percentile(idle_server, 50):.2f}, p99 {percentile(idle_server, 99):.2f}; {len(idle)} requests)"
        )
        print(
            f"  {rate:5.1f} upserts/s p50 {percentile(loaded, 50):6.2f} ms  p99 {percentile(loaded, 99):6.2f} ms  "
            f"(in the service: p50 {percentile(loaded_server, 50):.2f}, p99 {percentile(loaded_server, 99):.2f}; {len(loaded)} requests)"
        )
        print(
            f"  p99 ratio {ratio:.2f} ({'A/A: no upserts in either, the noise floor' if args.aa else 'target <= 1.20'}); "
            f"{got['idle_upserts']} upserts sent in idle windows; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
        )
        return {
            "visible_p50_ms": percentile(visible, 50),
            "visible_max_ms": max(visible) * 1000,
            "idle_p50_ms": percentile(idle, 50),
            "idle_p99_ms": percentile(idle, 99),
            "loaded_p50_ms": percentile(loaded, 50),
            "loaded_p99_ms": percentile(loaded, 99),
            "upserts_per_s": rate,
            "p99_ratio": ratio,
            "upsert_cpu": cpu,
            "aa": args.aa,
            "window_ms": args.window_ms,
            "idle_upserts": got["idle_upserts"],
            "load_average": os.getloadavg()[0],
            "cpus": os.cpu_count(),
        }
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


def find_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = parser.add_subparsers(dest="part", required=True)
    f = parts.add_parser("filter", help="region-filtered search at 10^6 listings (library level)")
    f.add_argument("--size", type=int, default=1_000_000)
    f.add_argument("--dim", type=int, default=64)
    f.add_argument("--index-type", choices=("hnsw", "ivf", "flat"), default="hnsw")
    f.add_argument("--ef-construction", type=int, default=200, help="HNSW build depth (IndexConfig's default)")
    f.add_argument("--shares", type=float, nargs="+", default=[0.001, 0.01, 0.1, 0.5])
    f.add_argument("--exact-share", type=float, default=None, help="override filtered_search.EXACT_SHARE")
    f.add_argument("--queries", type=int, default=200)
    f.add_argument("--k", type=int, default=200)
    f.add_argument("--build-threads", type=int, default=0, help="threads for the index build (0: all)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument(
        "--index-file",
        type=Path,
        help="write the built index here, or read it if it exists (a 10^6 "
        "HNSW build takes 7-25 min; same --size/--dim/--seed/--ef-construction expected)",
    )
    f.add_argument("--build-only", action="store_true", help="stop after building/writing --index-file")
    f.add_argument(
        "--sweep",
        action="store_true",
        help="first compare broad-filter strategies (exact, selector "
        "at --sweep-ef, over-fetch at --sweep-overfetch) for --sweep-shares",
    )
    f.add_argument("--sweep-shares", type=float, nargs="+", default=[0.1, 0.5])
    f.add_argument("--sweep-ef", type=int, nargs="+", default=[256, 384, 512, 768, 1024])
    f.add_argument("--sweep-overfetch", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    s = parts.add_parser("service", help="PUT -> visible and GET p99 under upserts (over HTTP)")
    s.add_argument("--model", required=True, type=Path, help="model directory with its index (or a publish root)")
    s.add_argument("--histories", type=Path, help="user_histories.parquet if the model has none")
    s.add_argument("--redis-url", help="run two replicas sharing this Redis (measures cross-replica visibility)")
    s.add_argument("--listings", type=int, default=20)
    s.add_argument("--duration", type=float, default=60.0, help="seconds of GETs, idle and under upserts (each)")
    s.add_argument(
        "--window-ms",
        type=float,
        default=200.0,
        help="idle and loaded windows alternate this often (GETs "
        f"in the first {SETTLE_S * 1000:g} ms of a window, when it may still hold the other's last upserts, are not counted)",
    )
    s.add_argument("--upserts-per-s", type=float, default=100.0)
    s.add_argument(
        "--aa",
        action="store_true",
        help="no upserts in the loaded windows either: the ratio then "
        "reads the benchmark's own noise on this machine (an A/A test), to judge a ratio against",
    )
    s.add_argument(
        "--cpu-seconds", type=float, default=5.0, help="seconds of upserts (and of idle) for the CPU per upsert"
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.part == "filter":
        from serving.index.filtered import EXACT_SHARE

        args.exact_share = EXACT_SHARE if args.exact_share is None else args.exact_share
        if args.sweep and (args.index_type != "hnsw" or not set(args.sweep_shares) <= set(args.shares)):
            parser.error(f"--sweep needs --index-type hnsw and --sweep-shares among --shares {args.shares}")
        report = bench_filter(args)
    else:
        report = bench_service(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
