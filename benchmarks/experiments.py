"""Benchmark of online experiments (serving/experiments): assignment, logging overhead, report calibration.

1. Assignment: 10^6 user ids split by `Assigner` against the configured shares (target: every arm
   within 0.2 percentage points), the time per assignment, and the same split recomputed in a fresh
   process (another PYTHONHASHSEED): identical digests mean identical after a restart.
2. Logging overhead: `candidates serve --experiment` with one model arm (share 1), with and without
   an exposure_dir, in alternating rounds back to back (the machine is shared: the load average is
   printed beside each round); p99 at concurrency 1 and requests/s at concurrency 16 (targets:
   logging within 5 % of no logging on both). The load generator is benchmarks/serving.py's.
3. Report calibration, no HTTP: simulated users (homefeed/sample/response.py) over a sample-data
   catalogue; the control shows everyone the same popular list, the treatment replaces each slot
   with probability q by a listing picked for the user, q solved so the population lift of views per
   user is exactly +6 %. Over `--seeds` seeds of fresh users: how often the report's 95 % interval
   covers +6 % (target >= 90 %), and in an A/A split of the control how often it excludes 0 (<= 5 %).

Usage:
  python benchmarks/experiments.py [--model MODEL_DIR] [--ids 1000000] [--rounds 3] [--requests 3000]
      [--seeds 20] [--users 8000] [--skip-serving] [--json OUT]
Without --model a synthetic model (tests/support/model_factory.py, 20,000 articles) is built.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # benchmarks/serving.py shadows serving/
sys.path.insert(0, str(_HERE.parent))

from serving.experiments.assign import Assigner  # noqa: E402

SHARES = {"control": 0.5, "a": 0.3, "b": 0.2}
TRUE_LIFT = 0.06


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _serving_bench():
    spec = importlib.util.spec_from_file_location("bench_serving", _HERE / "serving.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
def assignment(n_ids: int) -> dict:
    assigner = Assigner("bench-salt", list(SHARES), list(SHARES.values()))
    users = [f"user-{i}" for i in range(n_ids)]
    started = time.perf_counter()
    arms = [assigner.arm_of(u) for u in users]
    seconds = time.perf_counter() - started
    counts = pd.Series(arms).value_counts()
    split = {arm: counts.get(arm, 0) / n_ids for arm in SHARES}
    digest = hashlib.sha256("\n".join(arms).encode()).hexdigest()[:16]
    code = (
        "import hashlib,sys; sys.path.insert(0, sys.argv[2]); from serving.experiments.assign import Assigner;"
        f"a=Assigner('bench-salt',{list(SHARES)!r},{list(SHARES.values())!r});"
        "print(hashlib.sha256('\\n'.join(a.arm_of(f'user-{i}') for i in range(int(sys.argv[1]))).encode()).hexdigest()[:16])"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", code, str(n_ids), str(_HERE.parent)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "4242"},
    ).stdout.strip()
    return {
        "ids": n_ids,
        "split": {arm: round(share, 5) for arm, share in split.items()},
        "max_deviation_pp": round(max(abs(split[a] - s) for a, s in SHARES.items()) * 100, 3),
        "us_per_assignment": round(seconds / n_ids * 1e6, 2),
        "digest": digest,
        "digest_fresh_process": fresh,
        "identical_after_restart": digest == fresh,
    }


# ---------------------------------------------------------------------------------------------
def synthetic_model(workdir: Path) -> Path:
    sys.path.insert(0, str(_HERE.parent))
    from components.build_index.build import build_model_index
    from homefeed.config import IndexConfig
    from tests.support import model_factory

    saved, model = workdir / "saved", workdir / "model"
    table = model_factory.save_hashing_model(saved, 16, 0)
    model_factory.make_model_dir(model, saved, table, version="bench", n_articles=20_000, n_users=3000)
    build_model_index(model, IndexConfig())
    return model


def logging_overhead(model: Path, workdir: Path, rounds: int, requests: int) -> list[dict]:
    bench = _serving_bench()
    users = bench.bench_users(model, 3000)
    paths = [f"/v1/users/{u}/candidates?k=200" for u in users]
    results = []
    for round_ in range(rounds):
        for logging_on in (False, True) if round_ % 2 == 0 else (True, False):
            exposure_dir = workdir / f"exposures-{round_}-{int(logging_on)}"
            experiment = workdir / f"experiment-{round_}-{int(logging_on)}.json"
            body = {"name": "bench", "salt": "s", "arms": [{"name": "model", "model": str(model), "share": 1.0}]}
            if logging_on:
                body["exposure_dir"] = str(exposure_dir)
            experiment.write_text(json.dumps(body))
            port = bench.free_port()
            command = [sys.executable, "-c", bench.LAUNCHER, "serve", "--model", str(model), "--port", str(port)]
            command += ["--no-watch", "--experiment", str(experiment)]
            with open(workdir / f"serve-{round_}-{int(logging_on)}.log", "w") as log:
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                bench.wait_for_workers(port, 1, timeout_s=300)
                c1 = bench.run_load(port, paths, 1, requests, 120, warmup=200)
                c16 = bench.run_load(port, paths, 16, requests * 2, 120, warmup=200)
            finally:
                bench.stop_service(process)
            written = 0
            if logging_on:
                import pyarrow.parquet as pq

                written = sum(pq.read_metadata(p).num_rows for p in exposure_dir.glob("exposures-*.parquet"))
            results.append(
                {
                    "round": round_,
                    "logging": logging_on,
                    "c1_p50_ms": c1["p50_ms"],
                    "c1_p99_ms": c1["p99_ms"],
                    "c16_requests_per_s": c16["requests_per_s"],
                    "c16_p99_ms": c16["p99_ms"],
                    "errors": c1["errors"] + c16["errors"],
                    "exposures_written": written,
                    "loadavg": load_average(),
                }
            )
            print(json.dumps(results[-1]), flush=True)
    return results


def logging_cost(n: int = 50_000, top_n: int = 50) -> dict:
    """What logging costs per answer, without HTTP: the request's share (`record`: a queue put) and the
    writer thread's CPU (ids looked up, rows built, Parquet written), measured with the main thread idle."""
    import functools

    from serving.experiments.exposures import Exposure, ExposureLog
    from serving.versions.article_table import as_article_ids

    ids = as_article_ids([f"a{i:07d}" for i in range(100_000)])
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 100_000, 200).tolist() for _ in range(1000)]
    with tempfile.TemporaryDirectory(prefix="bench-exposures-") as tmp:
        log = ExposureLog(tmp, "bench", max_queue=n + 1, rows_per_file=10_000)
        gate = __import__("threading").Event()
        log.record(Exposure("gate", "u", "m", False, 1.0, "v", False, 0.0, lambda: gate.wait() and []))
        exposures = [
            Exposure(
                f"r{i}",
                f"user-{i}",
                "m",
                False,
                1.0,
                "v",
                False,
                time.time(),
                functools.partial(ids.take, rows[i % 1000][:top_n]),
            )
            for i in range(n)
        ]
        started = time.perf_counter()
        for exposure in exposures:
            log.record(exposure)
        record_us = (time.perf_counter() - started) / n * 1e6
        cpu = time.process_time()
        wall = time.perf_counter()
        gate.set()
        log.close(timeout_s=600)
        writer_cpu_us = (time.process_time() - cpu) / n * 1e6
        writer_wall_us = (time.perf_counter() - wall) / n * 1e6
        size = sum(p.stat().st_size for p in Path(tmp).glob("exposures-*.parquet"))
    return {
        "exposures": n,
        "top_n": top_n,
        "record_us": round(record_us, 2),
        "writer_cpu_us": round(writer_cpu_us, 1),
        "writer_wall_us": round(writer_wall_us, 1),
        "bytes_per_exposure": round(size / n, 1),
        "written": log.written,
        "dropped": log.dropped,
    }


# ---------------------------------------------------------------------------------------------
def _catalogue(seed: int = 42) -> pd.DataFrame:
    from homefeed.sample.marketplace import SampleDataConfig, generate

    _, articles = generate(SampleDataConfig(users=50, articles=2000, days=7, seed=seed))
    return articles


def calibration(seeds: int, users: int, k: int = 20) -> dict:
    """Coverage of a planted +6 % lift and the A/A false-positive rate of the report (see module doc)."""
    import pyarrow as pa

    from homefeed.sample.response import ResponseConfig, ResponseModel
    from serving.experiments.exposures import SCHEMA
    from serving.experiments.report import build_report

    articles = _catalogue()
    model = ResponseModel(articles, ResponseConfig(seed=5, base_rate=0.05))
    ids = articles["article_id"].tolist()
    popular = ids[:k]  # the same list for everyone
    pool = np.array(ids[k:])

    def tailored(user: str) -> list[str]:
        """The user's k most appealing listings outside the popular list (disjoint from it: no duplicates)."""
        p = model.probabilities(user, list(pool))
        rank_free = p / 0.5 ** (np.arange(len(pool)) / model.config.position_half_life)
        return list(pool[np.argsort(-rank_free, kind="stable")[:k]])

    def expected(user: str, shown: list[str]) -> float:
        return float(model.probabilities(user, shown).sum())

    # q from a large population: E_T(q) = E_C + q (E_tailored - E_C), the lists being disjoint.
    population = [f"pop-{i}" for i in range(3000)]
    e_control = np.mean([expected(u, popular) for u in population])
    e_tailored = np.mean([expected(u, tailored(u)) for u in population])
    q = TRUE_LIFT * e_control / (e_tailored - e_control)
    t0 = pd.Timestamp("2026-06-01T12:00:00Z")
    covered, aa_positive, estimates = 0, 0, []
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        assigner = Assigner(f"calibration-{seed}", ["control", "treatment"], [0.5, 0.5])
        rows, lists = [], []
        for i in range(users):
            user = f"s{seed}-u{i}"
            arm = assigner.arm_of(user)
            shown = popular
            if arm == "treatment":
                own = tailored(user)
                shown = [own[r] if rng.random() < q else popular[r] for r in range(k)]
            rows.append(
                {
                    "request_id": f"{seed}-{i}",
                    "experiment": "calibration",
                    "user_id": user,
                    "arm": arm,
                    "overridden": False,
                    "share": 0.5,
                    "model_version": "v",
                    "fallback": arm == "control",
                    "served_at": t0,
                    "candidates": [{"rank": r + 1, "article_id": a} for r, a in enumerate(shown)],
                }
            )
            lists.append({"user_id": user, "served_at": t0, "article_ids": shown})
        views = model.simulate(pd.DataFrame(lists), seed=seed)
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        report = build_report(table, views, pd.Timedelta(hours=2), control="control", replicates=500, seed=seed)
        lift = next(d for d in report.differences if d.metric == "views_per_user")
        covered += lift.relative_low <= TRUE_LIFT <= lift.relative_high
        estimates.append((round(lift.relative, 4), round(lift.relative_low, 4), round(lift.relative_high, 4)))
        # A/A: the control's users split in two by another salt.
        halves = Assigner(f"aa-{seed}", ["A", "B"], [0.5, 0.5])
        aa_rows = [
            {**row, "arm": halves.arm_of(row["user_id"]), "fallback": False} for row in rows if row["arm"] == "control"
        ]
        aa = build_report(
            pa.Table.from_pylist(aa_rows, schema=SCHEMA),
            views,
            pd.Timedelta(hours=2),
            control="A",
            replicates=500,
            seed=seed,
        )
        aa_positive += next(d for d in aa.differences if d.metric == "views_per_user").significant
        print(f"  seed {seed}: lift {estimates[-1]}, A/A false positives so far: {aa_positive}", flush=True)
    return {
        "seeds": seeds,
        "users_per_seed": users,
        "true_lift": TRUE_LIFT,
        "q": round(float(q), 4),
        "coverage": covered / seeds,
        "aa_false_positive_rate": aa_positive / seeds,
        "estimates": estimates,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a model directory with index/ (default: a synthetic one)")
    parser.add_argument("--ids", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds with and without logging")
    parser.add_argument("--requests", type=int, default=3000, help="requests at concurrency 1 (twice at 16)")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--users", type=int, default=8000, help="simulated users per seed")
    parser.add_argument("--skip-serving", action="store_true")
    parser.add_argument("--only-cost", action="store_true", help="assignment and logging cost only")
    parser.add_argument("--skip-calibration", action="store_true")
    parser.add_argument("--json", type=Path, help="append the results as one JSON line")
    args = parser.parse_args(argv)
    if args.only_cost:
        args.skip_serving = args.skip_calibration = True
    report: dict = {"loadavg_start": load_average()}

    report["assignment"] = a = assignment(args.ids)
    print(f"\nassignment of {a['ids']:,} ids (shares {SHARES}): {a['split']}")
    print(
        f"  max deviation {a['max_deviation_pp']} pp, {a['us_per_assignment']} us each, "
        f"identical in a fresh process: {a['identical_after_restart']}"
    )

    report["logging_cost"] = cost = logging_cost()
    print(
        f"\nlogging cost per answer ({cost['exposures']:,} exposures, top {cost['top_n']}): request path "
        f"{cost['record_us']} us (queue put), writer thread {cost['writer_cpu_us']} us CPU "
        f"({cost['writer_wall_us']} us wall), {cost['bytes_per_exposure']} bytes of Parquet"
    )

    if not args.skip_serving:
        with tempfile.TemporaryDirectory(prefix="bench-experiments-") as tmp:
            workdir = Path(tmp)
            model = args.model or synthetic_model(workdir)
            rows = logging_overhead(model, workdir, args.rounds, args.requests)
        report["logging"] = rows
        print(
            f"\n{'round':>5} {'logging':>8} {'c1 p50 ms':>10} {'c1 p99 ms':>10} {'c16 req/s':>10} {'c16 p99 ms':>11} "
            f"{'errors':>6} {'written':>8}  loadavg"
        )
        for r in rows:
            print(
                f"{r['round']:>5} {r['logging']!s:>8} {r['c1_p50_ms']:>10} {r['c1_p99_ms']:>10} "
                f"{r['c16_requests_per_s']:>10} {r['c16_p99_ms']:>11} {r['errors']:>6} {r['exposures_written']:>8}  "
                f"{r['loadavg']}"
            )
        on = [r for r in rows if r["logging"]]
        off = [r for r in rows if not r["logging"]]
        p99_ratio = np.median([r["c1_p99_ms"] for r in on]) / np.median([r["c1_p99_ms"] for r in off]) - 1
        rps_ratio = (
            np.median([r["c16_requests_per_s"] for r in on]) / np.median([r["c16_requests_per_s"] for r in off]) - 1
        )
        report["logging_overhead"] = {
            "c1_p99_change": round(float(p99_ratio), 4),
            "c16_rps_change": round(float(rps_ratio), 4),
        }
        print(f"  medians over rounds, logging vs not: c=1 p99 {p99_ratio:+.1%}, c=16 requests/s {rps_ratio:+.1%}")

    if not args.skip_calibration:
        print(f"\nreport calibration: planted lift {TRUE_LIFT:+.0%}, {args.seeds} seeds x {args.users:,} users")
        report["calibration"] = c = calibration(args.seeds, args.users)
        print(
            f"  coverage of the true lift {c['coverage']:.0%} (target >= 90%), "
            f"A/A false positives {c['aa_false_positive_rate']:.0%} (target <= 5%), q={c['q']}"
        )
    report["loadavg_end"] = load_average()
    if args.json:
        with open(args.json, "a") as out:
            out.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
