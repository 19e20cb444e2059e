"""What the search signal buys: sample data with vs without searches, and users with searches only.

    .venv/bin/python benchmarks/searches.py                      # seeds 1,2,3, 1000 users
    .venv/bin/python benchmarks/searches.py --seeds 1 --epochs 3 --workdir /tmp/searches-bench

Per seed: `candidates sample-data` (events, articles and searches.parquet), then the whole pipeline
twice through `pipeline.run_local.run_local` (as `candidates pipeline run-local`), without and with
`--searches`, on the same files, and the test recall@200 each run's evaluation reports.

"Searches but no views": each test user who searched before their last view is encoded with an
empty history and only their queries (what the service does for a user it knows only from
searches), through the published model's serving signature (trainer.towers.serving_model.UserEncoder);
recall@200 of their test view over the corpus (brute force), against the training split's 200
most popular articles (what the service's fallback serves).

MovieLens 100K has no searches: the pipeline runs exactly as without a searches table (the extract adds empty
`recent_queries`, the model has no search part); see tests/trainer/test_trainer_model.py and
tests/extract/test_extract_searches.py for the checks that make this hold by construction.

Printed: one row per seed and the median over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

K = 200


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.machine()}, {os.cpu_count()} cores, load average {load:.1f}, Python {platform.python_version()}"


def search_only_recall(run_dir: Path, model_dir: Path) -> tuple[float, float, int]:
    """(model recall@K, popularity recall@K, users) over test users with queries, views hidden."""
    import numpy as np
    import pyarrow.parquet as pq

    from homefeed import features
    from homefeed.layout import extract_dir as extract_layout
    from trainer.towers.serving_model import UserEncoder

    examples = pq.read_table(run_dir / "extract" / "examples" / extract_layout.TRAINING_EXAMPLES_FILE).to_pylist()
    test = [e for e in examples if e[features.SPLIT] == features.TEST_SPLIT and e[features.RECENT_QUERIES]]
    ids = (model_dir / "article_ids.txt").read_text().split()
    row_of = {a: i for i, a in enumerate(ids)}
    test = [e for e in test if e[features.LABEL] in row_of]
    vectors = np.load(model_dir / "article_vectors.npy")
    encoder = UserEncoder(model_dir)
    users = encoder.encode_batched(
        [{features.HISTORY: [], features.RECENT_QUERIES: e[features.RECENT_QUERIES]} for e in test]
    )
    top = np.argsort(-(users @ vectors.T), axis=1, kind="stable")[:, :K]
    labels = np.array([row_of[e[features.LABEL]] for e in test])
    model_recall = float((top == labels[:, None]).any(axis=1).mean())
    counts: dict[str, int] = {}
    for e in examples:
        if e[features.SPLIT] == features.TRAIN_SPLIT and e[features.LABEL] in row_of:
            counts[e[features.LABEL]] = counts.get(e[features.LABEL], 0) + 1
    popular = {a for a, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:K]}
    popular_recall = float(np.mean([e[features.LABEL] in popular for e in test]))
    return model_recall, popular_recall, len(test)


def run_seed(seed: int, root: Path, users: int, parameters: dict[str, Any]) -> dict[str, Any]:
    from homefeed.sample.marketplace import SampleDataConfig, write_sample_data
    from pipeline.run_local import run_local

    data = write_sample_data(root / f"s{seed}" / "data", SampleDataConfig(users=users, seed=seed))
    print(f"\n== seed {seed}: {data['events']} views, {data['searches']} searches, {data['users']} users", flush=True)
    without = run_local(data["events_path"], data["articles_path"], root / f"s{seed}" / "without", parameters)
    print(f"   without searches: recall@200 {without.recall_at_200:.4f} ({without.seconds:.0f}s)", flush=True)
    with_ = run_local(
        data["events_path"],
        data["articles_path"],
        root / f"s{seed}" / "with",
        parameters,
        searches=data["searches_path"],
    )
    print(f"   with searches:    recall@200 {with_.recall_at_200:.4f} ({with_.seconds:.0f}s)", flush=True)
    model, popular, n = search_only_recall(with_.run_dir, with_.model_dir)
    print(f"   searches only ({n} users): model {model:.4f}, popularity {popular:.4f}", flush=True)
    return {
        "seed": seed,
        "without": without.recall_at_200,
        "with": with_.recall_at_200,
        "search_only_model": model,
        "search_only_popular": popular,
        "search_only_users": n,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated sample-data seeds (default: %(default)s)")
    parser.add_argument("--users", type=int, default=1000, help="sample-data users (default: %(default)s)")
    parser.add_argument(
        "--epochs", type=int, default=20, help="maximum training epochs; early stopping decides (default: %(default)s)"
    )
    parser.add_argument("--workdir", help="keep the runs here (default: a temporary directory, removed)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    from homefeed.logs import configure_logging

    configure_logging(-1)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    parameters = {"epochs": args.epochs}
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="homefeed-searches-"))
    print(f"machine: {machine()}; pipeline parameters {parameters}")
    results = []
    try:
        for seed in seeds:
            results.append(run_seed(seed, root, args.users, parameters))
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)

    print(f"\n{'seed':>6} {'without':>9} {'with':>9} {'gain':>8} {'search-only':>12} {'popularity':>11} {'ratio':>7}")
    for r in results:
        ratio = r["search_only_model"] / r["search_only_popular"] if r["search_only_popular"] else float("inf")
        print(
            f"{r['seed']:>6} {r['without']:>9.4f} {r['with']:>9.4f} {r['with'] - r['without']:>+8.4f} "
            f"{r['search_only_model']:>12.4f} {r['search_only_popular']:>11.4f} {ratio:>6.1f}x"
        )
    if len(results) > 1:
        med = {
            k: statistics.median(r[k] for r in results)
            for k in ("without", "with", "search_only_model", "search_only_popular")
        }
        gain = statistics.median(r["with"] - r["without"] for r in results)
        print(
            f"{'median':>6} {med['without']:>9.4f} {med['with']:>9.4f} {gain:>+8.4f} "
            f"{med['search_only_model']:>12.4f} {med['search_only_popular']:>11.4f} "
            f"{med['search_only_model'] / med['search_only_popular']:>6.1f}x"
        )
    print(f"goals: gain >= +0.05 recall@200; search-only >= 3x popularity (recall@{K})")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
