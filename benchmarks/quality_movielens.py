"""Candidate quality: import -> extract -> transform -> train -> evaluate, default settings.

    .venv/bin/python benchmarks/quality_movielens.py                      # ml-100k, one seed
    .venv/bin/python benchmarks/quality_movielens.py --seeds 42 1 2       # median over seeds
    .venv/bin/python benchmarks/quality_movielens.py --datasets ml-100k sample --json out.json

Datasets:
  ml-100k  MovieLens 100K from --movielens (default /work/shared/data/ml-100k), converted into
           the work directory (never into the project; research use only)
  sample   the project's generated marketplace data (`candidates sample-data` defaults)

Protocol (DEVELOPERS.md): each user's views ordered by time (ties by article id), the last one is
the target, earlier views are training data and the history; already-viewed articles are
excluded; Recall@K = share of users whose target is in their top K. The popularity baseline is
computed by `candidates evaluate` on the same split in the same run. Every stage runs through the
same library function as its CLI command, with default settings except the seed.

Printed: per dataset the Recall@K / NDCG@10 table (model median over seeds, popularity), the
training time per seed (the `train` stage: data pass, epochs with per-epoch eval, export), and
for ml-100k the targets (Recall@200 >= 0.72, Recall@50 >= 0.33, training < 10 min on 2 cores) next
to the references measured with the same protocol (popularity 0.380, item-kNN 0.491, ALS 0.683).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

DEFAULT_MOVIELENS = "/work/shared/data/ml-100k"
REFERENCES = {"popularity": 0.380, "item-kNN": 0.491, "ALS (32 factors)": 0.683}  # Recall@200, ml-100k
TARGETS = {"recall@200": 0.72, "recall@50": 0.33}
MAX_TRAIN_SECONDS = 600.0
METRICS = ("recall@10", "recall@50", "recall@100", "recall@200", "ndcg@10")


def machine() -> str:
    cores = os.cpu_count() or 0
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()}, {cores} cores, {memory:.0f} GiB, Python {platform.python_version()}"


def prepare(name: str, work: Path, movielens: str) -> tuple[Path, Path, dict[str, float]]:
    """Input tables -> EXTRACT_DIR -> TRANSFORM_DIR under work/name; returns both dirs and timings."""
    from components.extract.extract import extract_local
    from components.transform.job import run_transform

    base = work / name
    seconds: dict[str, float] = {}
    started = time.monotonic()
    if name == "ml-100k":
        from homefeed.movielens import import_movielens

        import_movielens(movielens, base / "input")
    else:
        from homefeed.sample_data import write_sample_data

        write_sample_data(base / "input")
    seconds["input"] = time.monotonic() - started
    started = time.monotonic()
    extract_local(base / "input" / "events.parquet", base / "input" / "articles.parquet", base / "extract")
    seconds["extract"] = time.monotonic() - started
    started = time.monotonic()
    run_transform(str(base / "extract"), str(base / "transform"))
    seconds["transform"] = time.monotonic() - started
    return base / "extract", base / "transform", seconds


def run_dataset(name: str, work: Path, movielens: str, seeds: list[int]) -> dict[str, Any]:
    from homefeed.config import TrainConfig
    from trainer.evaluate import evaluate_model
    from trainer.train import train_model

    extract_dir, transform_dir, seconds = prepare(name, work, movielens)
    runs = []
    for seed in seeds:
        config = replace(TrainConfig(), seed=seed)
        started = time.monotonic()
        result = train_model(transform_dir, work / name / "models", config, model_version=f"seed-{seed}")
        train_seconds = time.monotonic() - started
        evaluation = evaluate_model(result.model_dir, extract_dir)
        runs.append(
            {
                "seed": seed,
                "train_seconds": round(train_seconds, 1),
                "epochs_run": result.metrics["epochs_run"],
                "best_epoch": result.metrics["best_epoch"],
                "model": evaluation["model"],
                "popularity": evaluation["popularity"],
                "num_users": evaluation["num_users"],
            }
        )
        print(
            f"  {name} seed {seed}: recall@200 {evaluation['recall@200']:.4f}, recall@50 {evaluation['recall@50']:.4f}, "
            f"{result.metrics['epochs_run']} epochs (best {result.metrics['best_epoch']}), train {train_seconds:.0f} s",
            flush=True,
        )
    median = {m: statistics.median(r["model"][m] for r in runs) for m in METRICS}
    return {
        "dataset": name,
        "prepare_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "runs": runs,
        "model_median": median,
        "popularity": runs[0]["popularity"],
        "num_users": runs[0]["num_users"],
        "train_seconds_median": statistics.median(r["train_seconds"] for r in runs),
    }


def print_report(results: list[dict[str, Any]], seeds: list[int]) -> bool:
    """Prints the tables; returns whether the ml-100k targets (if run) are met."""
    ok = True
    print(f"\nmachine: {machine()}; default TrainConfig, seeds {seeds} (model column: median)")
    for result in results:
        name = result["dataset"]
        print(f"\n{name}: {result['num_users']} eval users; prepare {result['prepare_seconds']} s")
        print(f"{'metric':<12}{'model':>10}{'popularity':>12}")
        for metric in METRICS:
            print(f"{metric:<12}{result['model_median'][metric]:>10.4f}{result['popularity'][metric]:>12.4f}")
        times = ", ".join(f"{r['train_seconds']:.0f}" for r in result["runs"])
        print(f"train seconds per seed: {times} (median {result['train_seconds_median']:.0f})")
        if name == "ml-100k":
            print("references (recall@200, same protocol): " + ", ".join(f"{k} {v:.3f}" for k, v in REFERENCES.items()))
            for metric, target in TARGETS.items():
                value = result["model_median"][metric]
                met = value >= target
                ok &= met
                print(f"target {metric} >= {target}: {value:.4f} {'ok' if met else 'MISSED'}")
            slowest = max(r["train_seconds"] for r in result["runs"])
            met = slowest < MAX_TRAIN_SECONDS
            ok &= met
            print(f"target training < {MAX_TRAIN_SECONDS:.0f} s: slowest {slowest:.0f} s {'ok' if met else 'MISSED'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["ml-100k"], choices=["ml-100k", "sample"])
    parser.add_argument("--movielens", default=DEFAULT_MOVIELENS, help="directory with u.data, u.item, u.genre")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42], help="training seeds (default: 42, the default seed)")
    parser.add_argument("--workdir", default=None, help="keep intermediate outputs here (default: a temporary dir, deleted)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the stages' INFO logs (per-epoch lines)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s: %(message)s")

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="quality-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = [run_dataset(name, work, args.movielens, args.seeds) for name in args.datasets]
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    ok = print_report(results, args.seeds)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "seeds": args.seeds, "results": results}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
