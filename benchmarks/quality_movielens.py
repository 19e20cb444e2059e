"""Candidate quality: import -> extract -> transform -> train -> evaluate, user towers side by side.

    .venv/bin/python benchmarks/quality_movielens.py                               # ml-100k, default model, seed 42
    .venv/bin/python benchmarks/quality_movielens.py --seeds 42 1 2                # median over seeds
    .venv/bin/python benchmarks/quality_movielens.py --variants mean attention gru --log runs.jsonl
    .venv/bin/python benchmarks/quality_movielens.py --datasets churn sample --variants default

Datasets:
  ml-100k  MovieLens 100K from --movielens (default /work/shared/data/ml-100k), converted into
           the work directory (never into the project; research use only)
  sample   the project's generated marketplace data (`candidates sample-data` defaults)
  churn    `candidates sample-data --churn`: listings that live about a day, most views on recent ones

Protocol (DEVELOPERS.md): each user's views in time order, ties by article id (MovieLens ids are
zero-padded, so that is numeric order); the last view is TEST, the one before VALIDATION, the rest
TRAIN. Early stopping and every choice here (the winning variant) read only the validation split;
the test split is only reported. Already-viewed articles are excluded; Recall@K = share of users
whose target is in their top K. The baselines (popularity, trending 1 d / 7 d, item-kNN) are
computed by `candidates evaluate` on the same test views in the same run, each counting only views
up to the test view; EASE and ALS are fitted here (NumPy, trainer/evaluation/matrix_baselines.py)
and ranked over the same live corpus with the same exclusions. Every recall carries a 95 %
bootstrap interval over users (the log's `test_intervals`, `baseline_intervals`). Every stage runs through
the same library function as its CLI command, with default settings except the variant's.

Variants (`--variants`, names from VARIANTS, or NAME=JSON of TrainConfig fields): each is trained
per seed; the table shows the median over seeds of the validation recall@200 (the choice) and of
the test figures (the report), training seconds and the encode cost of one request (one history
through the exported SavedModel, as the service calls it; median of 200 calls). The variant with
the best validation recall@200 is marked; with `default` it is what `TrainConfig()` trains.

Every finished run is appended to `--log` (JSON lines) at once, so a long sweep leaves its figures
even when interrupted. The targets checked (ml-100k, the default model): test Recall@200 >= 0.76,
Recall@50 >= 0.42, training <= 180 s on 2 cores; churn: model above trending at Recall@200.
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
# EASE and ALS are computed here (trainer/evaluation/matrix_baselines.py, `matrix_baselines`) on the
# same test views, over the same live corpus and exclusions as the model, with these settings.
EASE_L2 = 500.0
ALS_SETTINGS = {"factors": 64, "l2": 0.1, "alpha": 10.0, "iterations": 15}
TARGETS = {"recall@200": 0.76, "recall@50": 0.42}
MAX_TRAIN_SECONDS = 180.0
METRICS = ("recall@10", "recall@50", "recall@100", "recall@200", "ndcg@10")
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "mean": {"user_pooling": "mean"},
    "attention": {"user_pooling": "attention"},
    "attention-w50": {"user_pooling": "attention", "attention_window": 50},
    "attention-w10": {"user_pooling": "attention", "attention_window": 10},
    "gru": {"user_pooling": "gru"},
    "attention-2blocks": {"user_pooling": "attention", "attention_blocks": 2},
    "attention-t0.1": {"user_pooling": "attention", "temperature": 0.1},
    "attention-t0.03": {"user_pooling": "attention", "temperature": 0.03},
    "attention-d128": {"user_pooling": "attention", "embedding_dim": 128, "output_dim": 128},
    "attention-d32": {"user_pooling": "attention", "embedding_dim": 32, "output_dim": 32},
    "attention-neg1024": {"user_pooling": "attention", "num_sampled_negatives": 1024},
    "attention-b1024": {"user_pooling": "attention", "batch_size": 1024, "learning_rate": 0.005},
}


def machine() -> str:
    cores = os.cpu_count() or 0
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{platform.machine()}, {cores} cores, {memory:.0f} GiB, Python {platform.python_version()}, load {load}"


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """`NAME` (from VARIANTS) or `NAME=JSON` (TrainConfig fields) -> (name, overrides)."""
    if "=" in spec:
        name, text = spec.split("=", 1)
        overrides = json.loads(text)
        if not isinstance(overrides, dict):
            raise ValueError(f"--variants {spec}: the JSON must be an object of TrainConfig fields")
        return name, overrides
    if spec not in VARIANTS:
        raise ValueError(f"--variants: unknown variant {spec!r}; known: {', '.join(VARIANTS)} (or NAME=JSON)")
    return spec, VARIANTS[spec]


def prepare(
    name: str, work: Path, movielens: str, sample=None, searches: bool = False
) -> tuple[Path, Path, dict[str, float]]:
    """Input tables -> EXTRACT_DIR -> TRANSFORM_DIR under work/name (reused when finished already);
    `sample`: the SampleDataConfig of a generated dataset (default: by name, as the module says);
    `searches`: a generated dataset's searches go into the extract (the user tower's search part)."""
    from components.extract.extract import extract_local
    from components.transform.job import run_transform

    base = work / name
    if (base / "extract" / "_SUCCESS").exists() and (base / "transform" / "_SUCCESS").exists():
        return base / "extract", base / "transform", {"reused": 0.0}
    shutil.rmtree(base, ignore_errors=True)
    seconds: dict[str, float] = {}
    started = time.monotonic()
    if name == "ml-100k":
        from homefeed.sample.movielens import import_movielens

        import_movielens(movielens, base / "input")
    else:
        from homefeed.sample.marketplace import SampleDataConfig, churn_config, write_sample_data

        write_sample_data(base / "input", sample or (churn_config() if name == "churn" else SampleDataConfig()))
    seconds["input"] = time.monotonic() - started
    started = time.monotonic()
    extract_local(
        base / "input" / "events.parquet",
        base / "input" / "articles.parquet",
        base / "extract",
        searches_path=base / "input" / "searches.parquet" if searches else None,
    )
    seconds["extract"] = time.monotonic() - started
    started = time.monotonic()
    run_transform(str(base / "extract"), str(base / "transform"))
    seconds["transform"] = time.monotonic() - started
    return base / "extract", base / "transform", seconds


def encode_cost_ms(model_dir: Path, extract_dir: Path, calls: int = 200) -> float:
    """Median milliseconds of one request's user vector: one history through the SavedModel."""
    import pyarrow.parquet as pq

    from homefeed import features
    from homefeed.layout import extract_dir as extract_layout
    from trainer.towers.serving_model import UserEncoder

    encoder = UserEncoder(model_dir)
    table = pq.read_table(extract_dir / extract_layout.USER_HISTORIES_FILE).slice(0, calls).to_pylist()
    keys = [features.HISTORY, *(features.history_attribute(a) for a in features.ARTICLE_ATTRIBUTES)]
    rows = [{k: row[k] or [] for k in keys if k in row} for row in table]
    encoder.encode(rows[:1])  # warm-up (tracing)
    times = []
    for row in rows:
        started = time.perf_counter()
        encoder.encode([row])
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def run_one(
    name: str, work: Path, extract_dir: Path, transform_dir: Path, variant: str, overrides: dict[str, Any], seed: int
) -> dict[str, Any]:
    from homefeed.config import to_dict
    from trainer.evaluation.evaluate import evaluate_model
    from trainer.training.id_dropout_choice import train_config
    from trainer.training.train import train_model

    config = replace(train_config(overrides), seed=seed)
    version = f"{variant}-seed-{seed}-{int(time.time())}"
    started = time.monotonic()
    result = train_model(transform_dir, work / name / "models", config, model_version=version)
    train_seconds = time.monotonic() - started
    evaluation = evaluate_model(result.model_dir, extract_dir)
    run = {
        "dataset": name,
        "variant": variant,
        "overrides": overrides,
        "config": to_dict(config),
        "seed": seed,
        "train_seconds": round(train_seconds, 1),
        "epochs_run": result.metrics["epochs_run"],
        "best_epoch": result.metrics["best_epoch"],
        "validation_recall@200": result.metrics["best_validation_recall"],
        "validation_k": result.metrics["validation_k"],
        "test": evaluation["model"],
        "test_intervals": evaluation.get("intervals", {}).get("recall", {}).get("model"),
        "baselines": evaluation["baselines"] | matrix_baselines(name, result.model_dir, extract_dir, evaluation),
        "baseline_intervals": {
            n: v for n, v in evaluation.get("intervals", {}).get("recall", {}).items() if n != "model"
        },
        "num_users": evaluation["num_users"],
        "encode_ms": round(encode_cost_ms(result.model_dir, extract_dir), 3),
        "machine": machine(),
    }
    shutil.rmtree(result.model_dir, ignore_errors=True)
    return run


_MATRIX: dict[str, dict[str, Any]] = {}


def matrix_baselines(name: str, model_dir: Path, extract_dir: Path, evaluation: dict[str, Any]) -> dict[str, Any]:
    """EASE and ALS recall@K on `evaluate`'s test views: fitted on the views before the test targets
    (what the model trains on), each view ranked over the corpus live at its time minus the seen
    set, as `candidates evaluate` ranks the model. Computed once per dataset (they do not depend on
    the model's seed); a figure is skipped, with the reason, when it cannot be computed."""
    if name in _MATRIX:
        return _MATRIX[name]
    import numpy as np
    import pandas as pd
    import pyarrow.compute as pc

    from homefeed import features
    from homefeed.layout import extract_dir as extract_layout
    from homefeed.layout import model_dir as layout
    from trainer.evaluation import baselines as baselines_lib
    from trainer.evaluation import cold_start, held_out
    from trainer.evaluation import matrix_baselines as mb
    from trainer.evaluation import metrics as metrics_lib
    from trainer.evaluation import served_corpus as served_lib

    ks = [int(k.split("@")[1]) for k in evaluation["model"] if k.startswith("recall@")]
    table = held_out.read_examples(extract_dir)
    article_ids = (model_dir / layout.ARTICLE_IDS_FILE).read_text().splitlines()
    articles = (
        pd.read_parquet(model_dir / layout.ARTICLES_FILE)
        if (model_dir / layout.ARTICLES_FILE).exists()
        else pd.DataFrame()
    )
    served = served_lib.ServedCorpus.build(
        article_ids,
        articles,
        served_lib.read_views(extract_dir / extract_layout.TRAINING_EXAMPLES_FILE),
        served_lib.read_listings(extract_dir / extract_layout.LISTINGS_FILE),
    )
    rows = table.filter(pc.equal(table.column(features.SPLIT), features.TEST_SPLIT)).to_pandas()
    rows = rows.sort_values(features.USER_ID, kind="stable").reset_index(drop=True)
    views = held_out.views_before_test(table)
    users = pd.Index(pd.unique(pd.concat([views["user_id"], rows[features.USER_ID]]).astype(str)))
    log = baselines_lib.ViewLog.from_ids(views["user_id"], views[features.ARTICLE_ID], None, served.article_ids, users)
    matrix = mb.interaction_matrix(log.users, log.items, len(users), len(served))
    seen = cold_start.bounded_seen(views)
    seen_log = baselines_lib.ViewLog.from_ids(
        seen["user_id"], seen[features.ARTICLE_ID], None, served.article_ids, users
    )
    by_user = pd.Series(seen_log.items).groupby(seen_log.users).apply(lambda s: np.unique(s.to_numpy()))
    user_rows = users.get_indexer(rows[features.USER_ID].astype(str))
    exclude = [by_user.get(u, np.zeros(0, np.int64)) for u in user_rows]
    targets = served.article_ids.get_indexer(rows[features.LABEL].astype(str))
    times = served_lib.timestamps_ms(rows[features.VIEWED_AT]) if served.timed else np.full(len(rows), np.nan)
    ranks: dict[str, np.ndarray] = {}
    started = time.monotonic()
    try:
        weights = mb.ease_weights(matrix, EASE_L2)
        ranks["EASE"] = served_lib.ranks_over_time(
            served, times, targets, exclude, lambda i, r, t: matrix[user_rows[i]] @ weights[:, r]
        )
    except ValueError as error:
        print(f"  {name}: EASE skipped: {error}", flush=True)
    user_f, item_f = mb.als_factors(matrix, **ALS_SETTINGS)
    ranks["ALS"] = served_lib.ranks_over_time(
        served, times, targets, exclude, lambda i, r, t: item_f[r] @ user_f[user_rows[i]]
    )
    intervals = metrics_lib.recall_intervals(ranks, ks, rows[features.USER_ID].astype(str).to_numpy())
    out = {n: {**metrics_lib.ranking_metrics(r, ks, 10), "interval": intervals["recall"][n]} for n, r in ranks.items()}
    print(f"  {name}: EASE and ALS computed in {time.monotonic() - started:.0f} s", flush=True)
    _MATRIX[name] = out
    return out


def is_default(overrides: dict[str, Any]) -> bool:
    """Whether a variant trains exactly what `TrainConfig()` trains (the goals are checked on it)."""
    from homefeed.config import TrainConfig
    from trainer.training.id_dropout_choice import train_config

    return train_config(overrides) == TrainConfig()


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the seeds of one (dataset, variant)."""
    validation = [r["validation_recall@200"] for r in runs if r["validation_recall@200"] is not None]
    return {
        "variant": runs[0]["variant"],
        "overrides": runs[0]["overrides"],
        "seeds": [r["seed"] for r in runs],
        "validation_recall@200": statistics.median(validation) if validation else None,
        "test": {m: statistics.median(r["test"][m] for r in runs) for m in METRICS},
        "train_seconds": statistics.median(r["train_seconds"] for r in runs),
        "encode_ms": statistics.median(r["encode_ms"] for r in runs),
        "epochs": [r["best_epoch"] for r in runs],
    }


def print_report(
    name: str, summaries: list[dict[str, Any]], baselines: dict[str, dict[str, float]], num_users: int
) -> bool:
    """Prints one dataset's table; returns whether its targets are met (by the variant that trains
    the default `TrainConfig()`, if one ran)."""
    print(f"\n{name}: {num_users} test users; machine {machine()}")
    head = f"{'variant':<22}{'val R@200':>10}{'R@10':>8}{'R@50':>8}{'R@100':>8}{'R@200':>8}{'train s':>9}{'encode ms':>10}  best epochs"
    print(head)
    chosen = max(summaries, key=lambda s: -1 if s["validation_recall@200"] is None else s["validation_recall@200"])
    for s in summaries:
        t = s["test"]
        val = "n/a" if s["validation_recall@200"] is None else f"{s['validation_recall@200']:.4f}"
        mark = (" <- best on validation" if s is chosen else "") + (
            " (= the default)" if is_default(s["overrides"]) else ""
        )
        print(
            f"{s['variant']:<22}{val:>10}{t['recall@10']:>8.4f}{t['recall@50']:>8.4f}{t['recall@100']:>8.4f}"
            f"{t['recall@200']:>8.4f}{s['train_seconds']:>9.0f}{s['encode_ms']:>10.2f}  {s['epochs']}{mark}"
        )
    for baseline, figures in baselines.items():
        print(
            f"{baseline:<22}{'':>10}{figures['recall@10']:>8.4f}{figures['recall@50']:>8.4f}"
            f"{figures['recall@100']:>8.4f}{figures['recall@200']:>8.4f}"
            + (
                f"  R@200 95% [{figures['interval']['recall@200'][0]:.4f}, {figures['interval']['recall@200'][1]:.4f}]"
                if "interval" in figures
                else ""
            )
        )
    default = next((s for s in summaries if is_default(s["overrides"])), None)
    if default is None:
        return True
    ok = True
    if name == "ml-100k":
        for metric, target in TARGETS.items():
            met = default["test"][metric] >= target
            ok &= met
            print(f"target {metric} >= {target}: {default['test'][metric]:.4f} {'ok' if met else 'MISSED'}")
        met = default["train_seconds"] <= MAX_TRAIN_SECONDS
        ok &= met
        print(
            f"target training <= {MAX_TRAIN_SECONDS:.0f} s: median {default['train_seconds']:.0f} s {'ok' if met else 'MISSED'}"
        )
    if name == "churn":
        trending = max(baselines[b]["recall@200"] for b in baselines if b.startswith("trending"))
        met = default["test"]["recall@200"] > trending
        ok &= met
        print(
            f"target recall@200 above trending ({trending:.4f}): {default['test']['recall@200']:.4f} {'ok' if met else 'MISSED'}"
        )
    return ok


def report_from_log(path: Path) -> int:
    """The tables of every (dataset, variant) recorded in a `--log` file (medians over its seeds)."""
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    ok = True
    for name in dict.fromkeys(r["dataset"] for r in runs):
        mine = [r for r in runs if r["dataset"] == name]
        variants = dict.fromkeys(r["variant"] for r in mine)
        summaries = [summarise([r for r in mine if r["variant"] == v]) for v in variants]
        ok &= print_report(name, summaries, mine[-1]["baselines"], mine[-1]["num_users"])
        loads = sorted(float(r["machine"].rsplit("load ", 1)[1].split(",")[0]) for r in mine if "load " in r["machine"])
        if loads:
            print(
                f"(recorded runs: 1-minute load {loads[0]:.1f} .. {loads[-1]:.1f} when each finished; the line above is now)"
            )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["ml-100k"], choices=["ml-100k", "sample", "churn"])
    parser.add_argument("--movielens", default=DEFAULT_MOVIELENS, help="directory with u.data, u.item, u.genre")
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[42], help="training seeds (default: 42, the default seed)"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["default"],
        help=f"user towers / settings to compare: {', '.join(VARIANTS)}, or NAME=JSON",
    )
    parser.add_argument(
        "--workdir",
        default=None,
        help="keep (and reuse) the extract/transform outputs here (default: a temporary dir, deleted)",
    )
    parser.add_argument("--log", default=None, help="append every finished run to this JSON-lines file")
    parser.add_argument("--json", default=None, help="also write the summary tables to this JSON file")
    parser.add_argument(
        "--from-log",
        default=None,
        metavar="FILE",
        help="train nothing: print the tables of the runs recorded in this --log file "
        "(all variants and seeds in it, per dataset)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show the stages' INFO logs (per-epoch lines)")
    args = parser.parse_args(argv)
    if args.from_log:
        return report_from_log(Path(args.from_log))
    variants = [parse_variant(v) for v in args.variants]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s: %(message)s"
    )

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="quality-"))
    work.mkdir(parents=True, exist_ok=True)
    ok = True
    report: list[dict[str, Any]] = []
    try:
        for name in args.datasets:
            extract_dir, transform_dir, seconds = prepare(name, work, args.movielens)
            print(f"{name}: prepared in {seconds} s", flush=True)
            summaries, baselines, users = [], {}, 0
            for variant, overrides in variants:
                runs = []
                for seed in args.seeds:
                    run = run_one(name, work, extract_dir, transform_dir, variant, overrides, seed)
                    runs.append(run)
                    baselines, users = run["baselines"], run["num_users"]
                    print(
                        f"  {name} {variant} seed {seed}: validation recall@200 {run['validation_recall@200']}, "
                        f"test recall@200 {run['test']['recall@200']:.4f}, recall@50 {run['test']['recall@50']:.4f}, "
                        f"best epoch {run['best_epoch']}/{run['epochs_run']}, train {run['train_seconds']:.0f} s, "
                        f"encode {run['encode_ms']:.2f} ms",
                        flush=True,
                    )
                    if args.log:
                        with open(args.log, "a") as log:
                            log.write(json.dumps(run) + "\n")
                summaries.append(summarise(runs))
            ok &= print_report(name, summaries, baselines, users)
            report.append({"dataset": name, "summaries": summaries, "baselines": baselines, "num_users": users})
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": machine(), "seeds": args.seeds, "results": report}, indent=2) + "\n"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
