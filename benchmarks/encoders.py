"""Benchmark of the user tower: the NumPy twin against the SavedModel, per call and per process.

For a model directory exported with `numpy_towers/` (trainer/training/numpy_export.py) and real user rows
(its `user_histories.parquet`, or `--histories`), each encoder runs in a fresh subprocess that
  1. imports what it needs and loads the model (memory: RSS and private from /proc/self/smaps_rollup
     before and after, i.e. what the encoder adds to a worker);
  2. encodes batches of 1, 4 and 16 real rows round robin (`--calls` per batch size after a warm-up)
     and reports the median and p99 wall time per call, with the service's thread settings (one
     TensorFlow thread, one BLAS thread);
  3. checks its vectors against the other encoder's (max abs difference).

Quote the load average with the figures (printed); run it under `flock -x /work/bench.lock`.

Usage:
  python benchmarks/encoders.py --model MODEL_DIR [--histories PATH] [--calls 2000] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

BATCHES = (1, 4, 16)

CHILD = r"""
import json, os, statistics, sys, time
from pathlib import Path
import numpy as np
from threadpoolctl import threadpool_limits
threadpool_limits(limits=1, user_api="blas")  # as the service does (serving/http/startup.py configure_threads, tf_threads=1)

def memory():
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, _, value = line.partition(":")
        fields[name] = int(value.split()[0]) / 1024 if value.strip() else 0.0
    return {"rss_mib": round(fields.get("Rss", 0.0), 1),
            "private_mib": round(fields.get("Private_Clean", 0.0) + fields.get("Private_Dirty", 0.0), 1)}

kind, model_dir, histories, calls, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
from serving.store import read_histories
rows = [row for _, row in read_histories(histories) if row["history"] or row.get("recent_queries")][:2000]
before = memory()
from trainer.towers.serving_model import load_user_encoder
started = time.perf_counter()
if kind == "saved_model":
    from trainer.towers.serving_model import set_tf_threads
    set_tf_threads(1)  # as the service does
encoder = load_user_encoder(model_dir, encoder=kind)
load_s = time.perf_counter() - started
encoder.encode(rows[:1])
after = memory()
result = {"encoder": encoder.kind, "load_s": round(load_s, 2), "memory_before": before, "memory_after": after,
          "tensorflow_imported": "tensorflow" in sys.modules, "calls": {}}
for batch in BATCHES_PLACEHOLDER:
    times, i = [], 0
    for n in range(calls // batch + 50):
        chunk = [rows[(i + j) % len(rows)] for j in range(batch)]
        i += batch
        t = time.perf_counter()
        encoder.encode(chunk)
        if n >= 50:
            times.append((time.perf_counter() - t) * 1000)
    times.sort()
    result["calls"][str(batch)] = {"median_ms": round(statistics.median(times), 4), "p99_ms": round(times[int(0.99 * (len(times) - 1))], 4),
                                   "calls": len(times)}
np.save(out, encoder.encode(rows[:500]))
print(json.dumps(result))
""".replace("BATCHES_PLACEHOLDER", repr(BATCHES))


def run_child(kind: str, model_dir: Path, histories: Path, calls: int, out: Path) -> dict:
    process = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(model_dir), str(histories), str(calls), str(out)],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=_HERE.parent,
    )
    if process.returncode:
        raise RuntimeError(f"{kind} run failed:\n{process.stderr[-3000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="a model directory exported with numpy_towers/")
    parser.add_argument("--histories", type=Path, help="user_histories.parquet (default: the model directory's)")
    parser.add_argument("--calls", type=int, default=2000, help="histories encoded per batch size")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    histories = args.histories or args.model / "user_histories.parquet"
    if not histories.is_file():
        parser.error(f"no user histories at {histories}: pass --histories")
    import tempfile

    import numpy as np

    report = {"machine": f"{os.cpu_count()} cores", "model": str(args.model), "load_average_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="encoders-bench-") as scratch:
        vectors = {}
        for kind in ("saved_model", "numpy"):
            report[kind] = run_child(kind, args.model, histories, args.calls, Path(scratch) / f"{kind}.npy")
            vectors[kind] = np.load(Path(scratch) / f"{kind}.npy")
    report["max_abs_difference"] = float(np.abs(vectors["numpy"] - vectors["saved_model"]).max())
    report["load_average_at_end"] = os.getloadavg()
    print(
        f"\nuser tower, {report['machine']}, load average {report['load_average_at_start'][0]:.1f} -> "
        f"{report['load_average_at_end'][0]:.1f}; max abs difference of the vectors {report['max_abs_difference']:.1e}"
    )
    print(f"{'encoder':>12} {'batch':>5} {'median ms':>10} {'p99 ms':>8} {'ms/row':>7}")
    for kind in ("saved_model", "numpy"):
        for batch, figures in report[kind]["calls"].items():
            print(
                f"{kind:>12} {batch:>5} {figures['median_ms']:>10.3f} {figures['p99_ms']:>8.3f} {figures['median_ms'] / int(batch):>7.3f}"
            )
    print(f"{'encoder':>12} {'TF imported':>11} {'load s':>7} {'RSS added MiB':>14} {'private added MiB':>18}")
    for kind in ("saved_model", "numpy"):
        r = report[kind]
        print(
            f"{kind:>12} {r['tensorflow_imported']!s:>11} {r['load_s']:>7} "
            f"{r['memory_after']['rss_mib'] - r['memory_before']['rss_mib']:>14.1f} "
            f"{r['memory_after']['private_mib'] - r['memory_before']['private_mib']:>18.1f}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
