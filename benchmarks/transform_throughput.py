"""Throughput of the transform job (`components.transform.job.run_transform`) on DirectRunner.

Generates synthetic EXTRACT_DIRs (seeded: Zipf-popular articles, histories of 1..H views with
parallel categories and regions, the label's title and age as the extract writes them (--no-content:
without, as before the content-aware article tower), 5% validation, 5% test), then runs the job once per size in a fresh process and
prints examples/second (wall clock and per CPU second) and peak memory: max RSS of the job process
and of its largest child (worker processes in multi_processing mode; importing TensorFlow alone
leaves a ~640 MiB short-lived child). Generation is not timed. With --profile, each run is under
cProfile and its time is split between our code, TF Transform, Beam, TensorFlow and pyarrow.

  .venv/bin/python benchmarks/transform_throughput.py                   # 10^4 and 10^5
  .venv/bin/python benchmarks/transform_throughput.py --large           # adds 10^6
  .venv/bin/python benchmarks/transform_throughput.py --sizes 100000 --profile
  .venv/bin/python benchmarks/transform_throughput.py --sizes 1000000 --label x --log runs.jsonl  # + a JSON line

--workers/--mode set DirectRunner's direct_num_workers/direct_running_mode (e.g. --workers 2 --mode
multi_processing). Each run prints a digest of its outputs (components/transform/outputs_digest.py:
counts, examples, dead letters, vocabularies): runs with other worker counts must print the same.
The first run in a fresh .venv also pays for compiling every imported module (uv installs no
.pyc files; with PYTHONDONTWRITEBYTECODE set they are never written): ~6 CPU-s per process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from homefeed import features
from homefeed.config import TransformConfig
from homefeed.layout import extract_dir as extract_layout

CATEGORIES = 12
REGIONS = 5


TITLE_WORDS = 5_000


def generate_extract_dir(
    path: Path, num_examples: int, history_length: int, seed: int = 0, content: bool = True
) -> Path:
    """Writes a synthetic EXTRACT_DIR with `num_examples` training examples (vectorised, fast).

    With `content` (what `candidates extract` writes today) each example also has the label's
    title (3 words of a Zipf-distributed vocabulary, fixed per article) and age in days; without it
    the data is that of the figures measured before the content-aware article tower.
    """
    rng = np.random.default_rng(seed)
    num_articles = max(1_000, num_examples // 10)
    num_users = max(10, num_examples // 20)
    names = pa.array([f"{i:07d}" for i in range(num_articles)])
    category_names = pa.array([f"cat{i}" for i in range(CATEGORIES)])
    region_names = pa.array([f"region{i}" for i in range(REGIONS)])

    def articles(size: int) -> np.ndarray:
        return (rng.zipf(1.3, size) - 1) % num_articles

    lengths = rng.integers(1, history_length + 1, num_examples)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    history = articles(int(offsets[-1]))
    label = articles(num_examples)

    def as_lists(index: np.ndarray, table: pa.Array) -> pa.ListArray:
        return pa.ListArray.from_arrays(pa.array(offsets), table.take(pa.array(index)))

    columns = {
        features.USER_ID: pa.array([f"user{u:07d}" for u in rng.integers(0, num_users, num_examples)]),
        features.LABEL: names.take(pa.array(label)),
        features.label_attribute("category"): category_names.take(pa.array(label % CATEGORIES)),
        features.label_attribute("region"): region_names.take(pa.array(label % REGIONS)),
        features.HISTORY: as_lists(history, names),
        features.history_attribute("category"): as_lists(history % CATEGORIES, category_names),
        features.history_attribute("region"): as_lists(history % REGIONS, region_names),
        features.EXAMPLE_AGE: pa.array(rng.uniform(0, 365, num_examples)),
        features.VIEWED_AT: pa.array(
            np.datetime64("2024-01-01") + rng.integers(0, 365 * 86400, num_examples).astype("timedelta64[s]")
        ),
        # 5 % test, 5 % validation (the held-out share of the old "eval" split, which the
        # transform now dead-letters as an unknown split: that cost the old figures 10 % of rows).
        features.SPLIT: pa.array(
            np.select(
                [(held_out := rng.random(num_examples)) < 0.05, held_out < 0.10],
                [features.TEST_SPLIT, features.VALIDATION_SPLIT],
                features.TRAIN_SPLIT,
            )
        ),
    }
    titles = None
    if content:
        words = (rng.zipf(1.2, (num_articles, 3)) - 1) % TITLE_WORDS
        titles = pa.array([f"w{a} w{b} w{c}" for a, b, c in words])
        columns[features.LABEL_TITLE] = titles.take(pa.array(label))
        columns[features.LABEL_AGE] = pa.array(rng.exponential(20.0, num_examples))
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path / extract_layout.TRAINING_EXAMPLES_FILE, row_group_size=100_000)
    pq.write_table(
        pa.table(
            {
                "article_id": names,
                "title": titles if titles is not None else names,
                "category": category_names.take(pa.array(np.arange(num_articles) % CATEGORIES)),
                "region": region_names.take(pa.array(np.arange(num_articles) % REGIONS)),
            }
        ),
        path / extract_layout.CORPUS_FILE,
    )
    (path / extract_layout.SUCCESS_MARKER).write_text("")
    return path


def _profile_split(stats_path: str, top: int) -> dict:
    """Own time (tottime) grouped by where the code lives, plus the top functions."""
    import pstats

    stats = pstats.Stats(stats_path)
    groups = {
        "ours (components/transform, trainer)": ("/components/transform/", "/trainer/"),
        "tensorflow_transform": ("/tensorflow_transform/",),
        "tfx_bsl": ("/tfx_bsl/",),
        "apache_beam": ("/apache_beam/",),
        "tensorflow": ("/tensorflow/", "/tf_keras/", "/keras/"),
        "pyarrow": ("/pyarrow/",),
    }
    totals = dict.fromkeys([*groups, "other (stdlib, builtins, C calls)"], 0.0)
    rows = []
    for (filename, line, name), (_, _, tottime, cumtime, _) in stats.stats.items():
        group = next((g for g, parts in groups.items() if any(p in filename for p in parts)), None)
        totals[group or "other (stdlib, builtins, C calls)"] += tottime
        rows.append((tottime, cumtime, f"{os.path.basename(filename)}:{line}({name})"))
    rows.sort(reverse=True)
    return {"split_seconds": totals, "top_tottime": rows[:top]}


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_one(examples: Path, out: Path, args: argparse.Namespace) -> dict:
    """Runs the job once in this process; returns seconds, counts and peak memory."""
    import logging

    from components.transform.job import run_transform

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("components").setLevel(logging.INFO)
    config = TransformConfig(
        history_length=args.history_length,
        batch_size=args.batch_size,
        direct_num_workers=args.workers,
        direct_running_mode=args.mode,
    )
    shutil.rmtree(out, ignore_errors=True)
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        summary = profiler.runcall(run_transform, str(examples), str(out), config)
        stats_path = str(out.parent / f"profile-{examples.name}.pstats")
        profiler.dump_stats(stats_path)
    else:
        summary = run_transform(str(examples), str(out), config)
    seconds = time.perf_counter() - started
    from components.transform.outputs_digest import transform_dir_digest

    digest = transform_dir_digest(str(out))
    # Float sums to 6 significant digits: TFT's statistics may differ in the last bits between
    # worker counts (outputs_digest.examples_digest); everything else is compared exactly.
    for split in digest["examples"].values():
        split.pop("exact_sha256")
        split["float_sums"] = {k: float(f"{v:.6g}") for k, v in split["float_sums"].items()}
    result = {
        "outputs_digest": hashlib.sha256(json.dumps(digest, sort_keys=True).encode()).hexdigest()[:16],
        "records_in": summary["records_in"],
        "seconds": seconds,
        "cpu_seconds": _cpu_seconds() - cpu_before,
        "pipeline_seconds": summary["seconds"]["pipeline"],
        "peak_rss_mib_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_mib_children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    if args.profile:
        result["profile"] = _profile_split(stats_path, args.top)
        result["profile_file"] = stats_path
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--large", action="store_true", help="also run 10^6 examples")
    parser.add_argument("--workdir", default="/tmp/transform-benchmark")
    parser.add_argument("--history-length", type=int, default=features.HISTORY_LENGTH)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=TransformConfig.batch_size,
        help="rows per TensorFlow batch (default: TransformConfig's)",
    )
    parser.add_argument("--workers", type=int, default=1, help="direct_num_workers")
    parser.add_argument("--mode", default="in_memory", help="direct_running_mode")
    parser.add_argument("--profile", action="store_true", help="cProfile each run (in_memory only sees this process)")
    parser.add_argument("--top", type=int, default=25, help="functions listed with --profile")
    parser.add_argument(
        "--no-content",
        action="store_true",
        help="generate examples without label title and age (the data before the content-aware article tower)",
    )
    parser.add_argument("--log", help="append one JSON line per run (figures, load, settings) to this file")
    parser.add_argument("--label", default="", help="a name for the runs in --log")
    parser.add_argument("--run-one", nargs=2, metavar=("EXAMPLES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.run_one:
        print("RESULT " + json.dumps(run_one(Path(args.run_one[0]), Path(args.run_one[1]), args)), flush=True)
        return 0

    sizes = sorted(set(args.sizes + ([1_000_000] if args.large else [])))
    workdir = Path(args.workdir)
    print(
        f"transform throughput on DirectRunner ({args.mode}, {args.workers} worker(s)), "
        f"H={args.history_length}, batch {args.batch_size}, {os.cpu_count()} CPUs, "
        f"{'no label content' if args.no_content else 'with label titles and ages'}"
    )
    print("(wall seconds depend on what else the machine runs; CPU seconds much less so)")
    print(
        f"{'examples':>10} {'wall s':>8} {'examples/s':>11} {'CPU s':>8} {'examples/CPU s':>15} "
        f"{'peak RSS MiB (job / children)':>30} {'load 1/5 min':>13}  outputs digest"
    )
    for size in sizes:
        load_before = os.getloadavg()
        examples = workdir / f"extract-{size}-h{args.history_length}{'' if args.no_content else '-content'}"
        if not (examples / extract_layout.SUCCESS_MARKER).exists():
            generate_extract_dir(examples, size, args.history_length, content=not args.no_content)
        command = [
            sys.executable,
            __file__,
            "--run-one",
            str(examples),
            str(workdir / f"out-{size}-{args.workers}-{args.mode}"),
            "--history-length",
            str(args.history_length),
            "--batch-size",
            str(args.batch_size),
            "--workers",
            str(args.workers),
            "--mode",
            args.mode,
            "--top",
            str(args.top),
        ]
        if args.profile:
            command.append("--profile")
        completed = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
        if completed.returncode or not lines:
            print(completed.stdout[-3000:], completed.stderr[-5000:], file=sys.stderr)
            return 1
        result = json.loads(lines[-1][len("RESULT ") :])
        rate = result["records_in"] / result["seconds"]
        cpu = result["cpu_seconds"]
        print(
            f"{size:>10} {result['seconds']:>8.1f} {rate:>11.0f} {cpu:>8.1f} {result['records_in'] / cpu:>15.0f} "
            f"{result['peak_rss_mib_self']:>16.0f} / {result['peak_rss_mib_children']:<11.0f} "
            f"{os.getloadavg()[0]:>6.1f}/{os.getloadavg()[1]:.1f}  {result['outputs_digest']}",
            flush=True,
        )
        if args.log:
            line = {
                "label": args.label,
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
                "examples": size,
                "content": not args.no_content,
                "batch_size": args.batch_size,
                "workers": args.workers,
                "mode": args.mode,
                "history_length": args.history_length,
                "wall_seconds": round(result["seconds"], 2),
                "examples_per_second": round(rate),
                "cpu_seconds": round(cpu, 2),
                "examples_per_cpu_second": round(result["records_in"] / cpu),
                "peak_rss_mib_job": round(result["peak_rss_mib_self"]),
                "peak_rss_mib_children": round(result["peak_rss_mib_children"]),
                "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
                "outputs_digest": result["outputs_digest"],
                "profiled": args.profile,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            with open(args.log, "a") as f:
                f.write(json.dumps(line) + "\n")
        if args.profile:
            profile = result["profile"]
            total = sum(profile["split_seconds"].values())
            print(f"  profile ({result['profile_file']}): own time by package, {total:.1f} s in this process")
            for group, seconds in sorted(profile["split_seconds"].items(), key=lambda kv: -kv[1]):
                print(f"    {group:<40} {seconds:7.1f} s {100 * seconds / total:5.1f}%")
            print("  top functions by own time (tottime s, cumtime s):")
            for tottime, cumtime, name in profile["top_tottime"]:
                print(f"    {tottime:7.2f} {cumtime:8.2f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
