"""An older commit's model under today's evaluation: apples to apples across a protocol change.

    .venv/bin/python benchmarks/quality_then_and_now.py                        # 9aef202, ml-100k, seeds 42 1 2
    .venv/bin/python benchmarks/quality_then_and_now.py --commit 9aef202 --seeds 42 --log runs.jsonl

Issue 17 changed both the model (content-aware article tower, id dropout) and the evaluation
(user vectors at the serving example age, the full seen set excluded), so a figure measured
before it cannot be compared with one measured after. This script takes the code of `--commit`
(default 9aef202, main just before the content tower merged) with `git archive`, runs ITS
import -> extract -> transform -> train on MovieLens 100K in a child process (its own code on
sys.path first; the pinned packages are the same), and then evaluates each trained model with
TODAY's `candidates evaluate` on TODAY's extract of the same data: at the serving age (today's
protocol, the gate's figure) and at each view's own age (what the old evaluation fed). Old model
directories load in today's evaluate: inputs an old signature lacks (title, age bucket) are left
out. Compare with today's defaults from `benchmarks/cold_start.py --datasets ml-100k`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_COMMIT = "9aef202"
DEFAULT_MOVIELENS = "/work/shared/data/ml-100k"

# Runs inside the child, with the old tree first on sys.path: its own prepare and train_model.
_CHILD = """
import importlib.util, json, sys
from dataclasses import replace
from pathlib import Path
source, work, movielens, seeds = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4:]
sys.path.insert(0, source)
import trainer
assert trainer.__file__.startswith(source), trainer.__file__
spec = importlib.util.spec_from_file_location("then_quality", f"{source}/benchmarks/quality_movielens.py")
quality = importlib.util.module_from_spec(spec); spec.loader.exec_module(quality)
extract, transform, _ = quality.prepare("ml-100k", work, movielens)
from homefeed.config import TrainConfig
from trainer.training.train import train_model
for seed in seeds:
    target = work / "models" / f"then-seed-{seed}"
    if not (target / "manifest.json").exists():
        result = train_model(transform, work / "models", replace(TrainConfig(), seed=int(seed)), model_version=target.name)
        print(json.dumps({"seed": int(seed), "validation_recall@200": result.metrics["best_validation_recall"]}), flush=True)
"""


def checkout(commit: str, into: Path) -> Path:
    """The tree of `commit` under `into` (git archive; reused when there)."""
    if not (into / "trainer").exists():
        into.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
        tarfile.open(fileobj=io.BytesIO(archive)).extractall(into)
    return into


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commit", default=DEFAULT_COMMIT, help=f"the older commit (default {DEFAULT_COMMIT})")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2])
    parser.add_argument("--movielens", default=DEFAULT_MOVIELENS)
    parser.add_argument("--work", default="/tmp/homefeed-then-and-now", help="work directory (kept for reuse)")
    parser.add_argument("--log", default=None, help="append every run as a JSON line here")
    args = parser.parse_args(argv)
    import importlib.util

    from homefeed.config import EvaluateConfig
    from trainer.evaluation.evaluate import evaluate_model

    work = Path(args.work)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.commit], check=True, capture_output=True, text=True
    ).stdout.strip()
    source = checkout(commit, work / f"src-{commit}")
    then = work / f"then-{commit}"
    subprocess.run(
        [sys.executable, "-c", _CHILD, str(source), str(then), args.movielens, *map(str, args.seeds)],
        check=True,
        env={**os.environ, "PYTHONPATH": str(source)},
    )
    spec = importlib.util.spec_from_file_location(
        "quality_movielens", Path(__file__).resolve().parent / "quality_movielens.py"
    )
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    extract, _, _ = quality.prepare("ml-100k", work / "now", args.movielens)
    runs = []
    for seed in args.seeds:
        model_dir = then / "models" / f"then-seed-{seed}"
        serving = evaluate_model(model_dir, extract)
        examples = evaluate_model(model_dir, extract, EvaluateConfig(example_age="examples"))
        run = {
            "dataset": "ml-100k",
            "variant": f"then-{commit}",
            "seed": seed,
            "test_recall@200": serving["model"]["recall@200"],
            "test_recall@50": serving["model"]["recall@50"],
            "test_recall@200_examples_age": examples["model"]["recall@200"],
            "protocol": serving.get("protocol"),
            "machine": quality.machine(),
        }
        runs.append(run)
        if args.log:
            with open(args.log, "a") as log:
                log.write(json.dumps(run) + "\n")
    med = statistics.median
    print(f"\nml-100k, model of {commit} evaluated by today's code; seeds {args.seeds}; {quality.machine()}")
    for label, key in (
        ("recall@200, serving age (today)", "test_recall@200"),
        ("recall@50, serving age", "test_recall@50"),
        ("recall@200, each view's own age", "test_recall@200_examples_age"),
    ):
        print(f"{label:<34} {med(r[key] for r in runs):>8.4f}   " + " ".join(f"{r[key]:.4f}" for r in runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
