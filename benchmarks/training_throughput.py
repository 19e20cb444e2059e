"""Training speed: seconds per epoch at 10^6 events, and where an epoch's time goes.

Generates a seeded synthetic EXTRACT_DIR (the generator of benchmarks/transform_throughput.py:
Zipf-popular articles, histories of 1..H views with categories and regions, the label's title and
age, 5% validation, 5% test), transforms it once on DirectRunner (not timed; kept under
--workdir and reused), then, in one process:

  1. the input pipeline alone (`trainer.training.data.training_dataset`, exactly as training reads it):
     one pass while it fills the in-memory cache (what epoch 1 reads) and one from the cache
     (what every later epoch reads), no model;
  2. `candidates train`'s library call (`trainer.training.train.train_model`) for --epochs epochs with
     early stopping off (patience 0), so every epoch runs: per-epoch seconds, of which the
     per-epoch validation (recall@K over at most `max_eval_users` validation examples, exact
     search over the corpus), and the whole call (statistics, corpus, export included).

With the default `id_dropout_choices` (0, 0.9) `train_model` trains one model per rate (the
best on validation kept), so the training loop takes about twice one model's time: the table
shows the chosen model's epochs and a line gives each model's seconds. `--id-dropout-choices`
with no value trains one model (at `--id-dropout`, default 0.5), the unit of the per-model
figures in docs/benchmarks.md.

`--profile-steps N` trains nothing: it times N steps of one model, split into the forward and
backward pass (`Trainer.loss_and_gradients`) and the optimizer's update (the rest of
`Trainer.step`), in CPU-ms and wall ms per step.

Printed: examples/s per epoch, the process's CPU seconds per epoch (all threads; what a busy
machine changes least), the input pipeline's time as a share of a training epoch (an upper
bound on what a faster input pipeline could save: tf.data overlaps it with the step), the
validation share, and the machine's load average, which the wall clock depends on. Every
`candidates train` flag is accepted and passed through (e.g. --batch-size 1024).

  .venv/bin/python benchmarks/training_throughput.py                       # 10^6 examples, 5 epochs
  .venv/bin/python benchmarks/training_throughput.py --lazy-adam --id-dropout-choices   # one model
  .venv/bin/python benchmarks/training_throughput.py --fused-adam --epochs 2       # any train flag
  .venv/bin/python benchmarks/training_throughput.py --profile-steps 100 --lazy-adam  # the step split
  .venv/bin/python benchmarks/training_throughput.py --profile-steps 100 --lazy-adam --xla-dense  # dense part under XLA
  .venv/bin/python benchmarks/training_throughput.py --examples 100000 --epochs 2
  .venv/bin/python benchmarks/training_throughput.py --json benchmarks/results/training_issue16.jsonl

Time it under the exclusive benchmark lock on a shared machine:
`flock -x /work/bench.lock .venv/bin/python benchmarks/training_throughput.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from transform_throughput import generate_extract_dir

from homefeed import config as config_lib
from homefeed import features
from homefeed.config_flags import add_config_flags, config_from_args
from homefeed.layout import extract_dir as extract_layout
from homefeed.layout import transform_dir as transform_layout


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def prepare(workdir: Path, num_examples: int) -> Path:
    """The transformed synthetic data for `num_examples` (made once, then reused)."""
    examples = workdir / f"extract-{num_examples}"
    transformed = workdir / f"transform-{num_examples}"
    if (transformed / transform_layout.SUCCESS_MARKER).exists():
        return transformed
    if not (examples / extract_layout.SUCCESS_MARKER).exists():
        shutil.rmtree(examples, ignore_errors=True)
        generate_extract_dir(examples, num_examples, features.HISTORY_LENGTH)
    from components.transform.job import run_transform

    shutil.rmtree(transformed, ignore_errors=True)
    started = time.monotonic()
    run_transform(str(examples), str(transformed), config_lib.TransformConfig())
    print(f"(transformed {num_examples} examples in {time.monotonic() - started:.0f} s, not part of the figures)")
    return transformed


def time_input_pipeline(transformed: Path, config: config_lib.TrainConfig) -> dict[str, float]:
    """Seconds of one uncached and one cached pass over the training batches, no model. The first
    includes `training_dataset` itself, which fills the record cache before it returns."""
    from trainer.training import data as data_lib

    data = data_lib.TransformedData.open(transformed)
    started = time.monotonic()
    dataset = data_lib.training_dataset(
        data, config.batch_size, config.shuffle_buffer, config.seed, config.cache_examples
    )
    seconds = []
    for _ in range(2):
        batches = sum(1 for _ in dataset)
        seconds.append(time.monotonic() - started)
        started = time.monotonic()
    return {"first_pass_seconds": seconds[0], "cached_pass_seconds": seconds[1], "batches": batches}


def time_step_parts(transformed: Path, config: config_lib.TrainConfig, steps: int) -> dict[str, float]:
    """CPU and wall milliseconds per training step, split into the forward/backward pass and the
    optimizer's update: `steps` batches timed through `Trainer.loss_and_gradients` alone, then the
    same batches through the whole `Trainer.step` (after a few warm-up steps each; no validation)."""
    import keras
    import tensorflow as tf

    from trainer.model import two_tower as model_lib
    from trainer.training import data as data_lib
    from trainer.training.train import Trainer

    data = data_lib.TransformedData.open(transformed)
    stats = data_lib.training_statistics(data)
    keras.utils.set_random_seed(config.seed)
    model = model_lib.TwoTowerModel(data.vocab, data.history_length, config)
    model.build_all()
    trainer = Trainer(model, stats, config)
    batches = list(data_lib.training_dataset(data, config.batch_size, 10_000, config.seed, cache=False).take(steps + 5))
    gradients = tf.function(trainer.loss_and_gradients, reduce_retracing=True)

    def per_step(fn) -> tuple[float, float]:
        for batch in batches[:5]:
            float(fn(batch)[0] if fn is gradients else fn(batch))
        wall, cpu = time.monotonic(), time.process_time()
        for batch in batches[5:]:
            float(fn(batch)[0] if fn is gradients else fn(batch))
        return 1000 * (time.process_time() - cpu) / steps, 1000 * (time.monotonic() - wall) / steps

    backward_cpu, backward_wall = per_step(gradients)
    step_cpu, step_wall = per_step(trainer.step)
    return {
        "steps": steps,
        "forward_backward_cpu_ms": backward_cpu,
        "forward_backward_wall_ms": backward_wall,
        "step_cpu_ms": step_cpu,
        "step_wall_ms": step_wall,
        "update_cpu_ms": step_cpu - backward_cpu,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=1_000_000, help="synthetic examples (default: %(default)s)")
    parser.add_argument("--workdir", default="/tmp/training-benchmark", help="data and models are kept here")
    parser.add_argument("--json", help="append the figures as one JSON line to this file")
    parser.add_argument("--label", default="", help="a name for this run in --json")
    parser.add_argument("--skip-input", action="store_true", help="do not time the input pipeline alone")
    parser.add_argument(
        "--profile-steps",
        type=int,
        default=0,
        metavar="N",
        help=(
            "instead of training: time N steps of one model, split into forward/backward and the optimizer's update "
            "(CPU-ms and wall ms per step)"
        ),
    )
    add_config_flags(parser, config_lib.TrainConfig, "model and training (as `candidates train`)")
    args = parser.parse_args()
    config = config_from_args(config_lib.TrainConfig, args, early_stopping_patience=0)
    if "epochs" not in vars(args):
        config = dataclasses.replace(config, epochs=5)

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("trainer").setLevel(logging.INFO)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    transformed = prepare(workdir, args.examples)

    from trainer.training.train import train_model

    if args.profile_steps:
        load_before = os.getloadavg()
        parts = time_step_parts(transformed, config, args.profile_steps)
        print(
            f"step profile: {args.examples} synthetic examples, batch {config.batch_size}, lazy_adam "
            f"{config.lazy_adam}, fused_adam {config.fused_adam}, {machine()}"
        )
        print(f"{'per step':<18} {'CPU ms':>8} {'wall ms':>8}")
        print(
            f"{'forward/backward':<18} {parts['forward_backward_cpu_ms']:>8.1f} {parts['forward_backward_wall_ms']:>8.1f}"
        )
        print(
            f"{'update (the rest)':<18} {parts['update_cpu_ms']:>8.1f} {parts['step_wall_ms'] - parts['forward_backward_wall_ms']:>8.1f}"
        )
        print(f"{'whole step':<18} {parts['step_cpu_ms']:>8.1f} {parts['step_wall_ms']:>8.1f}")
        load_after = os.getloadavg()
        print(f"load average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f}")
        if args.json:
            figures = {
                "label": args.label,
                "machine": machine(),
                "examples": args.examples,
                "step_profile": parts,
                "config": {k: v for k, v in vars(args).items() if k in {f.name for f in dataclasses.fields(config)}},
                "load_average_before": load_before,
                "load_average_after": load_after,
            }
            with open(args.json, "a") as f:
                f.write(json.dumps(figures) + "\n")
        return 0

    print(
        f"training throughput: {args.examples} synthetic examples, {config.epochs} epochs, "
        f"batch {config.batch_size}, {machine()}"
    )
    load_before = os.getloadavg()
    input_times = None if args.skip_input else time_input_pipeline(transformed, config)
    models = workdir / "models"
    shutil.rmtree(models, ignore_errors=True)
    result = train_model(transformed, models, config, model_version="bench")
    load_after = os.getloadavg()
    metrics = result.metrics
    epochs = metrics["epochs"]
    n = metrics["num_train_examples"]

    print(
        f"{'epoch':>5} {'seconds':>8} {'examples/s':>11} {'CPU s':>7} {'validation s':>13} {'loss':>8} {'val recall':>10}"
    )
    for e in epochs:
        recall = e.get(f"validation_recall@{metrics['validation_k']}")
        print(
            f"{e['epoch']:>5} {e['seconds']:>8.1f} {n / e['seconds']:>11.0f} {e['cpu_seconds']:>7.1f} {e['validation_seconds']:>13.1f} "
            f"{e['loss']:>8.4f} {'n/a' if recall is None else f'{recall:.4f}':>10}"
        )
    epoch_seconds = [e["seconds"] for e in epochs]
    validation_seconds = sum(e["validation_seconds"] for e in epochs)
    per_model = metrics.get("id_dropout_choice", {}).get("train_seconds")
    if per_model:  # the epochs above are the chosen model's; train_seconds sums every model's
        print(
            f"{len(per_model)} models trained (one per id dropout rate, the best on validation kept; the table "
            f"shows the chosen {metrics['id_dropout_choice']['chosen']}): "
            + ", ".join(f"id dropout {rate}: {seconds:.1f} s" for rate, seconds in per_model.items())
        )
    print(
        f"{len(epochs)} epochs: {metrics['train_seconds']:.1f} s training loop "
        f"({validation_seconds / metrics['train_seconds']:.0%} validation), "
        f"{metrics['total_seconds']:.1f} s the whole train_model call (statistics, corpus, export)"
    )
    figures = {
        "label": args.label,
        "machine": machine(),
        "examples": args.examples,
        "train_examples": n,
        "config": {k: v for k, v in vars(args).items() if k in {f.name for f in dataclasses.fields(config)}},
        "epochs": epochs,
        "train_seconds": metrics["train_seconds"],
        "total_seconds": metrics["total_seconds"],
        "validation_seconds": validation_seconds,
        "train_seconds_per_model": per_model or {str(config.id_dropout): metrics["train_seconds"]},
        "load_average_before": load_before,
        "load_average_after": load_after,
    }
    if input_times:
        later = sorted(epoch_seconds[1:])[len(epoch_seconds[1:]) // 2] if len(epoch_seconds) > 1 else epoch_seconds[0]
        print(
            f"input pipeline alone: {input_times['first_pass_seconds']:.1f} s filling the cache (epoch 1 reads this), "
            f"{input_times['cached_pass_seconds']:.1f} s from the cache: "
            f"{input_times['cached_pass_seconds'] / later:.0%} of a later epoch's {later:.1f} s (median)"
        )
        figures["input_pipeline"] = input_times
    print(
        f"load average (1/5/15 min) before {load_before[0]:.1f}/{load_before[1]:.1f}/{load_before[2]:.1f}, "
        f"after {load_after[0]:.1f}/{load_after[1]:.1f}/{load_after[2]:.1f}"
    )
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(figures) + "\n")
        print(f"figures appended to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
