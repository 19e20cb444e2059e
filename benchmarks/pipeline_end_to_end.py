"""Times `candidates pipeline run-local` end to end, per stage, on MovieLens 100K and generated data.

    .venv/bin/python benchmarks/pipeline_end_to_end.py                       # all three datasets
    .venv/bin/python benchmarks/pipeline_end_to_end.py --datasets 1e5 --epochs 3
    .venv/bin/python benchmarks/pipeline_end_to_end.py --json results.json   # also write the figures

Datasets:
  ml-100k   MovieLens 100K imported from --movielens (default /work/shared/data/ml-100k); the
            files are converted into a temporary directory, never into the project
  1e5, 1e6  the sample-data generator sized for about 10^5 and 10^6 views

Each run goes through `pipeline.run_local.run_local` exactly as the CLI does (kfp.local
subprocesses, embedded BigQuery emulator, DirectRunner, gated publish), in a fresh work
directory. Printed per dataset: views, time of each stage as the component measured it, the
whole run's wall time (including KFP's and the subprocesses' start-up), recall@200, and throughput
per core (views per second per core) for the stages that scale with the data; docs/scaling.md
derives its sizes from those figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Users for about N views with the generator's defaults (about 47 views per user).
GENERATED = {"1e5": 2_150, "1e6": 21_300}
DEFAULT_MOVIELENS = "/work/shared/data/ml-100k"


def machine() -> str:
    cores = os.cpu_count() or 0
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory = float("nan")
    return f"{platform.machine()}, {cores} cores, {memory:.0f} GiB, Python {platform.python_version()}"


def make_dataset(name: str, root: Path, movielens: str) -> dict[str, Any]:
    """Writes the dataset's events.parquet + articles.parquet under root/name; returns its summary."""
    out = root / name / "data"
    if name == "ml-100k":
        from homefeed.sample.movielens import import_movielens

        return import_movielens(movielens, out)
    from homefeed.sample.marketplace import SampleDataConfig, write_sample_data

    users = GENERATED[name]
    # Articles grow with the users so the corpus stays about one listing per 10 views per user.
    return write_sample_data(out, SampleDataConfig(users=users, articles=max(2000, users * 2), seed=7))


def run_one(name: str, root: Path, movielens: str, parameters: dict[str, Any], verbose: bool) -> dict[str, Any]:
    from pipeline.run_local import run_local

    started = time.monotonic()
    data = make_dataset(name, root, movielens)
    data_seconds = time.monotonic() - started
    print(
        f"\n== {name}: {data['events']} views, {data['users']} users, {data['articles']} articles "
        f"(made in {data_seconds:.1f}s)",
        flush=True,
    )
    result = run_local(data["events_path"], data["articles_path"], root / name / "run", parameters, verbose=verbose)
    cores = os.cpu_count() or 1
    figures = {
        "dataset": name,
        "views": data["events"],
        "users": data["users"],
        "articles": data["articles"],
        "parameters": parameters,
        "stage_seconds": result.stage_seconds,
        "run_seconds": round(result.seconds, 1),
        "kfp_overhead_seconds": round(result.seconds - sum(result.stage_seconds.values()), 1),
        "recall@200": result.recall_at_200,
        "published": result.published,
        "views_per_second_per_core": {
            stage: round(data["events"] / seconds / cores, 1)
            for stage, seconds in result.stage_seconds.items()
            if stage in ("extract", "transform", "train") and seconds > 0
        },
    }
    print("   stages: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.stage_seconds.items()))
    print(
        f"   whole run {figures['run_seconds']}s (KFP + process start-up {figures['kfp_overhead_seconds']}s); "
        f"recall@200 {result.recall_at_200:.4f}; published: {result.published}"
    )
    print(f"   views/s/core: {figures['views_per_second_per_core']}", flush=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="ml-100k,1e5,1e6", help="comma-separated (default: %(default)s)")
    parser.add_argument("--movielens", default=DEFAULT_MOVIELENS, help="MovieLens 100K directory (u.data, u.item)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (default: %(default)s)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="more pipeline parameters")
    parser.add_argument("--workdir", help="keep the runs here (default: a temporary directory, removed)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--verbose", action="store_true", help="echo every task's full output")
    args = parser.parse_args(argv)

    from homefeed.logs import configure_logging
    from pipeline.submit import parameters_from_assignments

    configure_logging(-1)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in ("ml-100k", *GENERATED)]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; choose from ml-100k, {', '.join(GENERATED)}")
    parameters = {"epochs": args.epochs, **parameters_from_assignments(args.param)}

    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="homefeed-bench-"))
    print(f"machine: {machine()}")
    print(f"pipeline parameters: {parameters}")
    results = []
    try:
        for name in names:
            results.append(run_one(name, root, args.movielens, parameters, args.verbose))
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)

    print("\nsummary (seconds per stage; whole run includes KFP and process start-up)")
    stages = ["extract", "transform", "train", "evaluate", "transform-2", "train-final", "build-index", "publish"]
    print(
        f"{'dataset':<9} {'views':>9} "
        + " ".join(f"{s:>11}" for s in stages)
        + f" {'whole run':>10} {'recall@200':>10}"
    )
    for r in results:
        cells = " ".join(f"{r['stage_seconds'].get(s, float('nan')):>11.1f}" for s in stages)
        print(f"{r['dataset']:<9} {r['views']:>9} {cells} {r['run_seconds']:>10.1f} {r['recall@200']:>10.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results}, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
