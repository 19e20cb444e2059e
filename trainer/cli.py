"""`candidates train` and `candidates evaluate`: thin wrappers over trainer.training.train and trainer.evaluation.evaluate.

Every field of `TrainConfig` / `EvaluateConfig` becomes a flag (`embedding_dim` -> `--embedding-dim`)
with the help text from the field's metadata (homefeed/config_flags.py), so the CLI cannot drift
from the typed config.
TensorFlow is imported inside the handlers only, so `candidates --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from homefeed import config as config_lib
from homefeed.config_flags import add_config_flags, config_from_args, given_config_values

TRAIN_DESCRIPTION = """\
Train the two-tower candidate model (YouTube DNN) on a transform output and write a versioned
model directory OUT/<version>/ (saved_model/ with the transform inside, article vectors, popular
articles, config, metrics, manifest.json last). Logs loss and eval recall once per epoch.

example:
  candidates train --transformed work/transform --out work/models --epochs 10

data-parallel (trainer/training/distributed.py; --batch-size is the global batch, split evenly):
  candidates train ... --workers 2                      # 2 worker processes on this machine
  candidates train ... --cluster h0:2222,h1:2222 --worker-index 1   # this process is worker 1
  with TF_CONFIG set (a workers-only cluster) this process is that worker; worker 0 writes the model
"""

EVALUATE_DESCRIPTION = """\
Recall@K and NDCG@K of a trained model on the test split of an extract (each user's last view,
never used for a choice; already-viewed articles excluded), next to baselines computed on the same
test views: popularity, trending (views in the last 1 and 7 days before the extract's as_of) and
item-kNN (item-item co-occurrence over the user's history).
Writes evaluation.json, evaluation.png and predictions.html (sample users' last views and top
candidates) into the model directory and prints a table.

example:
  candidates evaluate --model work/models/20240301T120000Z --examples work/extract
"""


def register(subparsers: Any) -> None:
    train = subparsers.add_parser(
        "train",
        help="train the two-tower model -> MODEL_DIR (SavedModel, article vectors, manifest)",
        description=TRAIN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--transformed", required=True, metavar="DIR", help="TRANSFORM_DIR from `candidates transform`")
    train.add_argument("--out", required=True, metavar="DIR", help="root under which OUT/<version>/ is written")
    train.add_argument(
        "--version",
        default=None,
        help="model version (directory name); default: UTC time of training, e.g. 20240301T120000Z",
    )
    train.add_argument(
        "--workers",
        type=int,
        default=1,
        help="data-parallel worker processes to start on this machine (127.0.0.1); default 1: train in this process",
    )
    train.add_argument(
        "--cluster",
        default=None,
        metavar="HOST:PORT,...",
        help="every worker's address, in index order: this process is worker --worker-index of that cluster",
    )
    train.add_argument("--worker-index", type=int, default=None, help="this process's index in --cluster (0: chief)")
    add_config_flags(train, config_lib.TrainConfig, "model and training")
    train.set_defaults(handler=run_train)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="recall@K / NDCG on the test split vs baselines -> evaluation.json, evaluation.png, predictions.html",
        description=EVALUATE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="a model directory, or a `train --out` root (its newest finished model is used)",
    )
    evaluate.add_argument("--examples", required=True, metavar="DIR", help="EXTRACT_DIR from `candidates extract`")
    evaluate.add_argument(
        "--published",
        metavar="DIR",
        help="the published model directory, re-run on the same test views: the publish gate then compares "
        "the two pairwise (evaluation.json `published`, `intervals.ratio.model/published`)",
    )
    add_config_flags(evaluate, config_lib.EvaluateConfig, "evaluation")
    evaluate.set_defaults(handler=run_evaluate)


def _cluster_tf_config(args: argparse.Namespace) -> str | None:
    """TF_CONFIG of `--cluster`/`--worker-index`, else the environment's (None: not a cluster worker)."""
    from trainer.training import distributed

    if (args.cluster is None) != (args.worker_index is None):
        raise SystemExit("error: --cluster and --worker-index go together")
    if args.cluster is not None:
        if args.workers != 1:
            raise SystemExit("error: --workers starts local workers; with --cluster each worker is started apart")
        try:
            return json.dumps(distributed.tf_config(args.cluster.split(","), args.worker_index))
        except ValueError as error:
            raise SystemExit(f"error: --cluster/--worker-index: {error}") from error
    return os.environ.get(distributed.TF_CONFIG_ENV) or None


def run_train(args: argparse.Namespace) -> int:
    from trainer.training import distributed
    from trainer.training.id_dropout_choice import train_config

    cluster = _cluster_tf_config(args)
    # The strategy first: TensorFlow sets up a worker's collectives before any other op runs.
    replication = distributed.replication_from_tf_config(cluster) if cluster else distributed.SINGLE_PROCESS
    from trainer.training.train import train_model

    config = train_config(given_config_values(config_lib.TrainConfig, args))  # --id-dropout alone: no choice
    started = time.monotonic()
    if args.workers > 1 and not cluster:
        result = distributed.train_on_local_workers(args.transformed, args.out, config, args.workers, args.version)
    elif args.workers < 1:
        raise SystemExit(f"error: --workers must be at least 1, got {args.workers}")
    else:
        result = train_model(args.transformed, args.out, config, model_version=args.version, replication=replication)
    if not result.manifest:
        print(f"worker {replication.worker_index}: trained; the chief (worker 0) wrote the model directory")
        return 0
    best = result.metrics
    recall = best["best_validation_recall"]
    quality = (
        f"validation recall@{best['validation_k']} {recall:.4f} at epoch {best['best_epoch']} of {best['epochs_run']}"
        if recall is not None
        else f"no validation examples, {best['epochs_run']} epochs"
    )
    if config.refit:
        quality += f"; refitted on {'+'.join(best['fit']['splits'])} for {best['fit']['epochs']} epochs"
    print(
        f"model {result.model_version} written to {result.model_dir}: {quality}, "
        f"{result.num_articles} article vectors (d={config.output_dim}), {time.monotonic() - started:.1f} s"
    )
    return 0


def format_table(metrics: dict[str, Any]) -> str:
    """The evaluation result as an aligned text table: one row per metric, model and each baseline."""
    names = [k for k in metrics["model"] if k.startswith(("recall@", "ndcg@"))]
    columns = {"model": metrics["model"], **metrics.get("baselines", {"popularity": metrics["popularity"]})}
    widths = [max(13, len(c) + 1) for c in columns]
    lines = [f"{'metric':<15}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths))]
    intervals = (metrics.get("intervals") or {}).get("recall", {})
    for name in names:
        lines.append(
            f"{name:<15}" + "".join(f"{figures[name]:>{w}.4f}" for figures, w in zip(columns.values(), widths))
        )
        spans = [intervals.get(c, {}).get(name) for c in columns]
        if any(spans):
            lines.append(
                f"{'  95% interval':<15}"
                + "".join(f"{'' if s is None else f'{s[0]:.3f}-{s[1]:.3f}':>{w}}" for s, w in zip(spans, widths))
            )
    cold = metrics.get("cold_start") or {}
    if cold.get("num_users"):  # the same figures on the test views of new listings (trainer/evaluation/cold_start.py)
        for name in (n for n in names if n.startswith("recall@")):
            row = [cold.get(c, {}).get(name) for c in columns]
            lines.append(
                f"{'new ' + name:<15}" + "".join(f"{'' if v is None else f'{v:.4f}':>{w}}" for v, w in zip(row, widths))
            )
        lines.append(f"(new: {cold['num_users']} test views whose target was never viewed in training)")
    return "\n".join(lines)


def run_evaluate(args: argparse.Namespace) -> int:
    from trainer.evaluation.evaluate import evaluate_model

    config = config_from_args(config_lib.EvaluateConfig, args)
    metrics = evaluate_model(args.model, args.examples, config, published_model_dir=args.published)
    print(f"model {metrics['model_version']} on {metrics['num_users']} test users ({metrics['model_dir']}):")
    print(format_table(metrics))
    return 0
