"""Data-parallel training speed: examples/s with 1 process and with N worker processes on this machine.

Uses the seeded synthetic data of benchmarks/training_throughput.py (transformed once, kept under
--workdir), then trains the same config (early stopping off, so every epoch runs) once in one
process (`trainer.training.train.train_model`) and once per --workers count with that many local
worker processes on 127.0.0.1 (`trainer.training.distributed.train_on_local_workers`; the chief's
metrics). A worker's epoch is its B/N-record steps plus the gradient all-reduce with the others.

Printed per run: the median examples/s of the epochs after the first (epoch 1 traces and
compiles the step), validation excluded (every worker scores the whole validation set: that part
does not shrink with more workers), the best validation recall, and the load average, which the
wall clock depends on. On a machine with C cores, N workers share the C cores one process
already uses through TensorFlow's thread pools: the figure says what the all-reduce and the
smaller per-worker batches cost there; the gain needs a core budget (or a machine) per worker.

  .venv/bin/python benchmarks/training_workers.py --examples 100000 --epochs 3 --workers 2
  .venv/bin/python benchmarks/training_workers.py --json benchmarks/results/training_workers.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from training_throughput import machine, prepare

from homefeed import config as config_lib
from homefeed.config_flags import add_config_flags, config_from_args


def examples_per_second(metrics: dict) -> float:
    """Median over the epochs after the first of examples / (epoch seconds - validation seconds)."""
    n = metrics["num_train_examples"]
    epochs = metrics["epochs"][1:] or metrics["epochs"]
    return statistics.median(n / max(e["seconds"] - e["validation_seconds"], 1e-9) for e in epochs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=100_000, help="synthetic examples (default: %(default)s)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2], help="worker counts to time besides 1")
    parser.add_argument("--transformed", help="an existing TRANSFORM_DIR to train on instead of the synthetic data")
    parser.add_argument("--workdir", default="/tmp/training-benchmark", help="data and models are kept here")
    parser.add_argument("--json", help="append the figures as one JSON line to this file")
    parser.add_argument("--label", default="", help="a name for this run in --json")
    add_config_flags(parser, config_lib.TrainConfig, "model and training (as `candidates train`)")
    args = parser.parse_args()
    config = config_from_args(config_lib.TrainConfig, args, early_stopping_patience=0)
    if "epochs" not in vars(args):
        config = dataclasses.replace(config, epochs=3)
    if "id_dropout_choices" not in vars(args):  # one model per run: the epochs are that model's
        config = dataclasses.replace(config, id_dropout_choices=())
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    transformed = Path(args.transformed) if args.transformed else prepare(workdir, args.examples)

    from trainer.training.distributed import train_on_local_workers
    from trainer.training.train import train_model

    print(
        f"data-parallel training: {args.transformed or f'{args.examples} synthetic examples'}, {config.epochs} epochs, global batch "
        f"{config.batch_size}, {machine()}"
    )
    print(
        f"{'workers':>7} {'examples/s':>11} {'epoch s':>8} {'wall s':>7} {'val recall':>10} {'load 1/5/15 before':>19}"
    )
    runs = []
    for workers in [1, *args.workers]:
        models = workdir / f"models-{workers}"
        shutil.rmtree(models, ignore_errors=True)
        load = os.getloadavg()
        started = time.monotonic()
        if workers == 1:
            result = train_model(transformed, models, config, model_version="bench")
        else:
            result = train_on_local_workers(transformed, models, config, workers, model_version="bench")
        wall = time.monotonic() - started
        metrics = result.metrics
        rate = examples_per_second(metrics)
        epoch = statistics.median(e["seconds"] for e in metrics["epochs"][1:] or metrics["epochs"])
        recall = metrics["best_validation_recall"]
        print(
            f"{workers:>7} {rate:>11.0f} {epoch:>8.1f} {wall:>7.0f} "
            f"{'n/a' if recall is None else f'{recall:.4f}':>10} {'/'.join(f'{x:.1f}' for x in load):>19}"
        )
        runs.append(
            {
                "workers": workers,
                "examples_per_second": rate,
                "median_epoch_seconds": epoch,
                "wall_seconds": wall,
                "best_validation_recall": recall,
                "epochs": metrics["epochs"],
                "load_average_before": load,
            }
        )
    load_after = os.getloadavg()
    print(f"load average (1/5/15 min) after {load_after[0]:.1f}/{load_after[1]:.1f}/{load_after[2]:.1f}")
    if args.json:
        figures = {
            "label": args.label,
            "machine": machine(),
            "examples": args.transformed or args.examples,
            "config": {k: v for k, v in vars(args).items() if k in {f.name for f in dataclasses.fields(config)}},
            "runs": runs,
            "load_average_after": load_after,
        }
        with open(args.json, "a") as f:
            f.write(json.dumps(figures) + "\n")
        print(f"figures appended to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
