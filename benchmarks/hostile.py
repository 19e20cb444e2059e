"""Benchmark of hostile and heavy live traffic against a real `candidates serve` (loopback HTTP).

What it does, each step printing one row of the goals' table (docs/live.md, "Hostile and heavy
traffic"):
  1. redaction of a 100 kB and a 2 MB client value (homefeed/redact.py, in this process): ms per
     call and the ratio, which must stay near 1 (values are cut before the patterns run);
  2. /healthz latency (p50, max) while another thread posts events whose fields are at the size
     limits and far over them (100 kB and 900 kB `viewed_at`): goal max < 100 ms;
  3. `--users` new user ids through POST /v1/events (1,000 per request) with the service's
     `live_max_users` set to `--max-users`: the service's RSS before and after (goal: bounded by the
     cap, not the ids posted) and GET p99 after vs idle (goal: within 1.5x);
  4. `--listings` new listings (POST /v1/articles) and `--updates` updates of one listing (PUT):
     RSS and GET p50/p99 after vs idle;
  5. POST /admin/reload?force=true with those live listings held: the slowest GET while the reload
     runs (goal: none over 50 ms);
  6. the load average, since the machine's other work shows in every latency.

Usage:
  python benchmarks/hostile.py --model MODEL_DIR [--users 1000000] [--max-users 100000]
      [--listings 100000] [--updates 100000] [--json out.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from homefeed import redact

TOKEN = "hostile-benchmark-token-0123456789"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ms(values) -> dict:
    values = np.asarray(values) * 1000
    return {
        "p50": float(np.percentile(values, 50)),
        "p99": float(np.percentile(values, 99)),
        "max": float(values.max()),
    }


def get_latencies(client: httpx.Client, users: list[str], n: int) -> list[float]:
    out = []
    for i in range(n):
        started = time.perf_counter()
        client.get(f"/v1/users/{users[i % len(users)]}/candidates", params={"k": 50})
        out.append(time.perf_counter() - started)
    return out


def bench_redaction() -> dict:
    row = {}
    for size in (100_000, 2_000_000):
        text = "-" * size
        started = time.perf_counter()
        for _ in range(20):
            redact.public_message(text)
        row[f"redact_{size // 1000}kB_ms"] = (time.perf_counter() - started) / 20 * 1000
    row["ratio_2MB_to_100kB"] = row["redact_2000kB_ms"] / row["redact_100kB_ms"]
    return row


def bench_healthz_under_hostile_writes(client: httpx.Client, seconds: float) -> dict:
    stop = threading.Event()
    bodies = [
        json.dumps({"events": [{"user_id": "h1", "article_id": "a1", "viewed_at": "9" * size}]}).encode()
        for size in (2048, 100_000, 900_000)
    ]

    def writer():
        with httpx.Client(base_url=client.base_url, headers=HEADERS, timeout=60) as own:
            i = 0
            while not stop.is_set():
                own.post("/v1/events", content=bodies[i % len(bodies)], headers={"Content-Type": "application/json"})
                i += 1

    threads = [threading.Thread(target=writer, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    latencies, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        client.get("/healthz")
        latencies.append(time.perf_counter() - started)
        time.sleep(0.01)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    return {"healthz_ms": ms(latencies), "healthz_samples": len(latencies)}


def bench_users(client, pid, users, n_users: int, gets: int) -> dict:
    idle = ms(get_latencies(client, users, gets))
    before = rss_mb(pid)
    started = time.perf_counter()
    for start in range(0, n_users, 1000):
        events = [
            {"user_id": f"flood{i}", "article_id": "a000001", "viewed_at": "2024-07-01T00:00:00Z"}
            for i in range(start, min(n_users, start + 1000))
        ]
        client.post("/v1/events", json={"events": events}, headers=HEADERS)
    seconds = time.perf_counter() - started
    after = ms(get_latencies(client, users, gets))
    return {
        "users_posted": n_users,
        "users_seconds": seconds,
        "rss_before_mb": before,
        "rss_after_users_mb": rss_mb(pid),
        "get_idle_ms": idle,
        "get_after_users_ms": after,
        "p99_ratio_users": after["p99"] / idle["p99"],
    }


def bench_listings(client, pid, users, n_listings: int, n_updates: int, gets: int) -> dict:
    idle = ms(get_latencies(client, users, gets))
    for start in range(0, n_listings, 1000):
        items = [{"article_id": f"flood-{i}", "title": "t" * 100} for i in range(start, min(n_listings, start + 1000))]
        client.post("/v1/articles", json={"articles": items}, headers=HEADERS)
    after_new = rss_mb(pid)
    for i in range(n_updates):
        client.put("/v1/articles/hot", json={"title": f"update {i}"}, headers=HEADERS)
    after = ms(get_latencies(client, users, gets))
    return {
        "listings_posted": n_listings,
        "updates_of_one": n_updates,
        "rss_after_listings_mb": after_new,
        "rss_after_updates_mb": rss_mb(pid),
        "get_after_listings_ms": after,
        "p99_ratio_listings": after["p99"] / idle["p99"],
    }


def bench_reload(client, users) -> dict:
    done = threading.Event()
    answer = {}

    def reload():
        answer["response"] = client.post("/admin/reload", params={"force": "true"}, headers=HEADERS, timeout=600)
        done.set()

    thread = threading.Thread(target=reload, daemon=True)
    latencies = []
    with httpx.Client(base_url=client.base_url, timeout=600) as reader:
        thread.start()
        while not done.is_set():
            latencies += get_latencies(reader, users, 5)
        latencies += get_latencies(reader, users, 50)  # the new model's first requests
    return {"reload_status": answer["response"].status_code, "get_during_reload_ms": ms(latencies)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="model directory with its index (or publish root)")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--max-users", type=int, default=100_000, help="the service's live_max_users")
    parser.add_argument("--listings", type=int, default=100_000)
    parser.add_argument("--updates", type=int, default=100_000)
    parser.add_argument("--healthz-seconds", type=float, default=10.0)
    parser.add_argument("--gets", type=int, default=500, help="GETs per latency sample")
    parser.add_argument("--json", type=Path, help="append the figures as one JSON line")
    args = parser.parse_args(argv)

    figures = {"load_average_start": os.getloadavg()[0], **bench_redaction()}
    port = free_port()
    state = tempfile.mkdtemp(prefix="hostile-")
    env = {
        **os.environ,
        "CANDIDATES_WRITE_TOKEN": TOKEN,
        "CANDIDATES_LIVE_MAX_USERS": str(args.max_users),
        "CANDIDATES_LIVE_MAX_LISTINGS": str(args.listings + 10),
        "CANDIDATES_RELOAD_MIN_INTERVAL_S": "0",
    }
    command = [sys.executable, "-m", "homefeed_cli", "serve", "--model", str(args.model), "--port", str(port)]
    log = open(Path(state) / "service.log", "w")
    service = subprocess.Popen(
        [*command, "--no-watch", "--live-store", str(Path(state) / "live.sqlite3")], stdout=log, stderr=log, env=env
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            deadline = time.monotonic() + 300
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if service.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the service did not start; see {log.name}")
                time.sleep(0.5)
            users = [f"u{i:04d}" for i in range(1, 50)]
            figures.update(bench_healthz_under_hostile_writes(client, args.healthz_seconds))
            figures.update(bench_users(client, service.pid, users, args.users, args.gets))
            figures.update(bench_listings(client, service.pid, users, args.listings, args.updates, args.gets))
            figures.update(bench_reload(client, users))
    finally:
        service.terminate()
        service.wait(timeout=60)
        log.close()
    figures["load_average_end"] = os.getloadavg()[0]

    print(f"{'figure':<34} value")
    for name, value in figures.items():
        if isinstance(value, dict):
            value = "  ".join(f"{k} {v:.2f}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.2f}"
        print(f"{name:<34} {value}")
    print(
        "\ngoals: redaction ratio ~1 (linear, capped); healthz max < 100 ms; RSS bounded by the caps; "
        "GET p99 ratio <= 1.5; no GET over 50 ms during the reload"
    )
    if args.json:
        with open(args.json, "a") as out:
            out.write(json.dumps({"benchmark": "hostile", "args": vars(args), **figures}, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
