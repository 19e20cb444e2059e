"""Generated marketplace data: the model and every baseline beside the oracle, the best achievable.

    .venv/bin/python benchmarks/quality_marketplace.py                         # churn, 2,000 users, seeds 42 1 2
    .venv/bin/python benchmarks/quality_marketplace.py --preset default --seeds 42 --no-model
    .venv/bin/python benchmarks/quality_marketplace.py --log benchmarks/results/quality_marketplace.jsonl

`candidates sample-data` writes what its generator knows (homefeed/sample/oracle.py: each user's
true preference over the listings). Per seed this script generates the data, extracts it, ranks
every test view by the oracle's scores under the evaluation's protocol (`protocol_ranks`: the
corpus live at the view's time, the user's seen set excluded, the same test views and tie rule as
`candidates evaluate`, with the baselines computed there the same way), and, unless `--no-model`,
runs transform -> train -> `candidates evaluate`. The table shows recall@K of each ranker with
its 95 % bootstrap interval (users resampled) and as a share of the oracle's recall@K on the same
views. The oracle knows the preferences but not the session in progress, so a model reading the
last views may pass it on the views a session explains.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# Run as a script, benchmarks/ is sys.path[0], and benchmarks/serving.py would shadow the
# `serving` package: take it off.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

KS = (10, 50, 200)
ORACLE = "oracle"


def protocol_ranks(extract_dir: Path, oracle: Any, max_users: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Ranks of each test view's target by the oracle and by every baseline, as `candidates
    evaluate` ranks them (trainer/evaluation/evaluate.py): over the corpus live at the view's time
    (trainer/evaluation/served_corpus.py), the user's bounded seen set excluded, the baselines
    counting views up to the view (trainer/evaluation/served_ranks.py).

    Returns `{"users": [n] user ids, "ranks": {name: int64 [n]}}` (item-kNN over every view).
    """
    import pyarrow.compute as pc

    from homefeed import features
    from homefeed.layout import extract_dir as extract_layout
    from trainer.evaluation import baselines as baselines_lib
    from trainer.evaluation import cold_start, served_ranks
    from trainer.evaluation import held_out as examples_lib
    from trainer.evaluation import served_corpus as served_lib

    table = examples_lib.read_examples(extract_dir)
    articles = pd.read_parquet(extract_dir / extract_layout.CORPUS_FILE)
    served = served_lib.ServedCorpus.build(
        articles[features.ARTICLE_ID].astype(str).tolist(),
        articles,
        served_lib.read_views(extract_dir / extract_layout.TRAINING_EXAMPLES_FILE),
        served_lib.read_listings(extract_dir / extract_layout.LISTINGS_FILE),
    )
    corpus_index = served.article_ids
    eval_rows = table.filter(pc.equal(table.column(features.SPLIT), features.TEST_SPLIT)).to_pandas()
    eval_rows = eval_rows.sort_values(features.USER_ID, kind="stable").reset_index(drop=True)
    if max_users is not None and len(eval_rows) > max_users:
        keep = np.sort(np.random.default_rng(seed).choice(len(eval_rows), max_users, replace=False))
        eval_rows = eval_rows.iloc[keep].reset_index(drop=True)
    users = eval_rows[features.USER_ID].astype(str).tolist()
    targets = corpus_index.get_indexer(eval_rows[features.LABEL].astype(str))
    views = examples_lib.views_before_test(table)
    log, user_index, histories = served_ranks.baseline_log(views, users, corpus_index)
    empty = np.zeros(0, np.int64)
    seen = cold_start.bounded_seen(views)
    seen_log = baselines_lib.ViewLog.from_ids(
        seen["user_id"], seen[features.ARTICLE_ID], None, corpus_index, user_index
    )
    seen_by_user = pd.Series(seen_log.items).groupby(seen_log.users).apply(lambda s: np.unique(s.to_numpy()))
    exclude = [seen_by_user.get(i, empty) for i in user_index.get_indexer(users)]
    times = served_lib.timestamps_ms(eval_rows[features.VIEWED_AT])
    as_of = examples_lib.as_of(extract_dir, views)

    oracle_users = oracle.user_index(users)
    # Corpus row -> the oracle's listing index (-1: a listing the generator did not make).
    oracle_rows = oracle.article_index(corpus_index)

    def oracle_score(i: int, rows: np.ndarray, t_ms: float) -> np.ndarray:
        if oracle_users[i] < 0:
            return np.zeros(len(rows))
        scores = oracle.scores(int(oracle_users[i]), t_ms)
        listing = oracle_rows[rows]
        return np.where(listing >= 0, scores[np.maximum(listing, 0)], 0.0)

    category_region = served_ranks.category_region(served, log, as_of)
    ranks = served_ranks.baseline_ranks(
        served, log, as_of, times, user_index.get_indexer(users), histories, targets, exclude, None, category_region
    )
    ranks[ORACLE] = served_lib.ranks_over_time(served, times, targets, exclude, oracle_score)
    return {"users": np.asarray(users, dtype=object), "ranks": ranks}


def recall_table(users: np.ndarray, ranks: dict[str, np.ndarray], seed: int = 0) -> dict[str, dict[str, Any]]:
    """Each ranker's recall@K with its 95 % bootstrap interval (users resampled), and its share of
    the oracle's recall@K on the same views with the paired interval of that ratio."""
    from trainer.evaluation import metrics

    pairs = [(name, ORACLE) for name in ranks if name != ORACLE and ORACLE in ranks]
    bootstrap = metrics.recall_intervals(ranks, KS, users, pairs, seed=seed)
    out: dict[str, dict[str, Any]] = {}
    for name, r in ranks.items():
        figures = metrics.ranking_metrics(r, KS, max(KS))
        out[name] = {f"recall@{k}": figures[f"recall@{k}"] for k in KS}
        for k in KS:
            out[name][f"recall@{k}_interval"] = bootstrap["recall"][name][f"recall@{k}"]
            ratio = bootstrap["ratio"].get(f"{name}/{ORACLE}", {}).get(f"recall@{k}")
            if name == ORACLE:
                out[name][f"share_of_oracle@{k}"] = 1.0
            elif ratio:
                out[name][f"share_of_oracle@{k}"] = ratio["ratio"]
                out[name][f"share_of_oracle@{k}_interval"] = ratio["interval"]
    return out


def run_one(preset: str, users: int, seed: int, work: Path, train: bool) -> dict[str, Any]:
    """One seed: data + oracle, extract, oracle and baselines under the protocol, and the model."""
    from components.extract.extract import extract_local
    from homefeed.sample.marketplace import SampleDataConfig, churn_config, write_sample_data
    from homefeed.sample.oracle import Oracle

    base = work / f"{preset}-{users}-{seed}"
    shutil.rmtree(base, ignore_errors=True)
    config = churn_config(users=users, seed=seed) if preset == "churn" else SampleDataConfig(users=users, seed=seed)
    started = time.monotonic()
    write_sample_data(base / "input", config)
    extract_local(base / "input" / "events.parquet", base / "input" / "articles.parquet", base / "extract")
    ranked = protocol_ranks(base / "extract", Oracle.load(base / "input"))
    run: dict[str, Any] = {
        "preset": preset,
        "users": users,
        "seed": seed,
        "test_views": len(ranked["users"]),
        "rankers": recall_table(ranked["users"], ranked["ranks"], seed),
    }
    if train:
        from components.transform.job import run_transform
        from homefeed.config import TrainConfig
        from trainer.evaluation.evaluate import evaluate_model
        from trainer.training.train import train_model

        run_transform(str(base / "extract"), str(base / "transform"))
        model = train_model(base / "transform", base / "models", TrainConfig(seed=seed), model_version="m")
        evaluation = evaluate_model(model.model_dir, base / "extract")
        oracle = run["rankers"][ORACLE]
        run["rankers"]["model"] = {
            **{f"recall@{k}": evaluation["model"][f"recall@{k}"] for k in KS if f"recall@{k}" in evaluation["model"]},
            **{
                f"share_of_oracle@{k}": evaluation["model"][f"recall@{k}"] / oracle[f"recall@{k}"]
                for k in KS
                if f"recall@{k}" in evaluation["model"] and oracle[f"recall@{k}"]
            },
        }
        run["model_evaluation_views"] = evaluation["num_users"]
    run["seconds"] = round(time.monotonic() - started, 1)
    return run


def print_table(runs: list[dict[str, Any]]) -> None:
    """Medians over seeds: recall@200 [interval of the first seed] and its share of the oracle's."""
    names = list(dict.fromkeys(name for run in runs for name in run["rankers"]))
    print(f"{runs[0]['preset']}, {runs[0]['users']} users, seeds {[r['seed'] for r in runs]} (medians over seeds)")
    print(
        f"{'ranker':<20} {'recall@200':>10} {'95% interval (seed ' + str(runs[0]['seed']) + ')':>30} {'of oracle':>10}"
    )
    for name in names:
        values = [r["rankers"][name] for r in runs if name in r["rankers"]]
        recall = statistics.median(v["recall@200"] for v in values)
        share = [v.get("share_of_oracle@200") for v in values if v.get("share_of_oracle@200") is not None]
        interval = values[0].get("recall@200_interval")
        shown = f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "(evaluation.json)"
        print(f"{name:<20} {recall:>10.4f} {shown:>30} {statistics.median(share) if share else float('nan'):>10.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["churn", "default"], default="churn")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--work", type=Path, default=Path("/tmp/quality-marketplace"))
    parser.add_argument("--no-model", action="store_true", help="the oracle and the baselines only (no training)")
    parser.add_argument("--log", type=Path, help="append each run as a JSON line")
    args = parser.parse_args(argv)
    runs = []
    for seed in args.seeds:
        run = run_one(args.preset, args.users, seed, args.work, not args.no_model)
        runs.append(run)
        if args.log:
            with open(args.log, "a") as handle:
                handle.write(json.dumps({"benchmark": "quality_marketplace", **run}) + "\n")
    print_table(runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
