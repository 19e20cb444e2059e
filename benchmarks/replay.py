"""Does the evaluation predict the service? `candidates replay` on the churn preset, the default preset and MovieLens.

    .venv/bin/python benchmarks/replay.py                                  # all three, pipeline defaults
    .venv/bin/python benchmarks/replay.py --datasets churn --users 1000
    .venv/bin/python benchmarks/replay.py --datasets movielens --param epochs=10

For each data set (serving/replay/run.py, docs/replay.md): the views after a cut are held out of
the input tables before the pipeline sees them, `candidates pipeline run-local` runs on the rest,
`candidates serve` serves the published model (listing ages following the replayed events), the
held-out window is replayed through HTTP in time order, and recall@200 (and @50) of the answers,
with a 95 % bootstrap interval over users, is printed beside the evaluation's own figure and
interval from the run's evaluation.json. `agrees`: the difference is within its 95 % interval
(serving/replay/score.py says why that check).

Data sets and hold-outs:
  churn      `candidates sample-data --churn` (listings live about a day): the last day after a time
             cut (`--window-days`), with the listings created and sold in it upserted at their times
  default    `candidates sample-data` (30 days, listings up for weeks): the last day after a time cut
  movielens  MovieLens 100K from --movielens: each user's last view (`--hold-out last-per-user`).
             MovieLens is evaluated under the per-user leave-last-out protocol (import-movielens
             records that it wants it), so the replay holds out what that protocol tests: each
             user's last rating, the model trained on everything else. A time cut on MovieLens
             would answer few users (most stopped rating months before the last rating) and
             compare a figure the per-user evaluation never measures.

Each result is appended to --results (benchmarks/results/replay.jsonl) as one JSON line, with the
load average: timings and figures on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

# `python benchmarks/replay.py` puts benchmarks/ first on sys.path: benchmarks/serving.py would shadow the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

DEFAULT_MOVIELENS = "/work/shared/data/ml-100k"
RESULTS = Path(__file__).resolve().parent / "results" / "replay.jsonl"
DATASETS = ("churn", "default", "movielens")


def _make_data(name: str, out: Path, users: int | None, seed: int, movielens: str) -> dict:
    from homefeed.sample.marketplace import SampleDataConfig, churn_config, write_sample_data
    from homefeed.sample.movielens import import_movielens

    if name == "movielens":
        summary = import_movielens(movielens, out)
        return {"events": summary["events_path"], "articles": summary["articles_path"], "searches": None}
    overrides = {"seed": seed, **({"users": users} if users else {})}
    config = churn_config(**overrides) if name == "churn" else SampleDataConfig(**overrides)
    summary = write_sample_data(out, config)
    return {
        "events": summary["events_path"],
        "articles": summary["articles_path"],
        "searches": summary["searches_path"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--users", type=int, help="users of the generated data sets (default: the preset's)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--window-days", type=float, default=1.0, help="held-out window of the time cut [1]")
    parser.add_argument("--movielens", default=DEFAULT_MOVIELENS)
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="pipeline parameter")
    parser.add_argument("--workdir", help="where data and runs go (default: a temporary directory)")
    parser.add_argument("--results", default=str(RESULTS), help="JSON lines file to append to")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from serving.replay.run import run_replay
    from serving.replay.window import LAST_PER_USER, TIME

    parameters = dict(p.split("=", 1) for p in args.param)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="replay-"))
    records = []
    for name in args.datasets:
        data = _make_data(name, root / name / "data", args.users, args.seed, args.movielens)
        label = name if name == "movielens" or not args.users else f"{name}-{args.users}u"
        records.append(
            run_replay(
                data["events"],
                data["articles"],
                root / name / "run",
                searches=data["searches"],
                mode=LAST_PER_USER if name == "movielens" else TIME,
                window_days=args.window_days,
                parameters=parameters,
                label=label,
                results=args.results,
                seed=args.seed,
            )
        )
    print()
    for record in records:
        row = record["comparison"]["recall@200"]
        print(
            f"{record['label']:<14} served R@200 {row['served']:.3f} {row['served_interval']}  evaluated "
            f"{row['evaluated']:.3f} {row['evaluated_interval']}  agrees: {row['agrees']}  "
            f"(protocol {json.dumps(record['evaluation']['protocol'])}, load {record['loadavg']})"
        )
    return 0 if all(r["comparison"]["recall@200"]["agrees"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
