"""The train task's library side: train into exactly the artifact's path.

The trainer writes `ROOT/<version>/` (version = UTC time); a Kubeflow `Output[Model]` has one fixed
path. `train_into` trains under a staging root beside that path and moves the finished model
directory into place with `homefeed.atomic.move_into_place` (fsynced, renamed; an earlier one
replaced), so the artifact holds a whole model directory or nothing.

Data-parallel training (trainer/training/distributed.py): with TF_CONFIG in the environment this
process is one worker of that cluster (on Kubernetes, one pod of deploy/training/); otherwise
`workers` > 1 starts that many worker processes on this machine. Either way only the chief's
model directory reaches `target`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

from homefeed import atomic, lifetime
from homefeed.config import TrainConfig
from homefeed.layout import model_dir as model_layout


def train_into(transformed: str | os.PathLike, target: str | os.PathLike, config: TrainConfig, workers: int = 1) -> Any:
    """Trains on TRANSFORM_DIR `transformed` and leaves the MODEL_DIR at `target`.

    `workers`: training processes to start on this machine (1: this process trains alone);
    ignored when TF_CONFIG names a cluster this process is a worker of.

    Returns:
      `trainer.training.train.train_model`'s result (`model_dir` is then `target`'s old staging place; use
      `target`). A worker other than the chief writes nothing: its result's manifest is empty.
    """
    from trainer.training import distributed  # light: TensorFlow is imported when a strategy is made

    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.train-"
    lifetime.remove_stale_dirs(target.parent, prefix)
    staging_root = lifetime.owned_dir(target.parent, prefix)
    try:
        result = _train(distributed, os.fspath(transformed), staging_root, config, workers)
        if result.manifest:  # the chief's (or the only) model directory
            atomic.move_into_place(Path(result.model_dir), target, replace=True)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    return result


def _train(distributed: Any, transformed: str, staging_root: Path, config: TrainConfig, workers: int) -> Any:
    from trainer.training.train import train_model  # heavy: TensorFlow

    if os.environ.get(distributed.TF_CONFIG_ENV):
        # One worker of a cluster; every worker stages under its own root, the same version name.
        replication = distributed.replication_from_tf_config()
        return train_model(transformed, staging_root, config, model_version="model", replication=replication)
    if workers > 1:
        return distributed.train_on_local_workers(transformed, staging_root, config, workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    return train_model(transformed, staging_root, config)


def final_config(held_out: str | os.PathLike) -> TrainConfig:
    """The settings of the model to publish, from the held-out model directory `held_out`: its
    exported config (id dropout as chosen on validation) with `final_epochs` = its best epoch, so
    the final fit repeats what validation chose, on every view up to as_of.

    Raises:
      ValueError: `held_out` is not a held-out fit (no config or metrics, or already fitted on
        every split) or names no epoch count.
    """
    held_out = Path(held_out)
    try:
        saved = json.loads((held_out / model_layout.CONFIG_FILE).read_text())["train"]
        metrics = json.loads((held_out / model_layout.METRICS_FILE).read_text())
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{held_out}: not a model directory with a training config and metrics ({error})") from None
    splits = (metrics.get("fit") or {}).get("splits")
    if splits != ["train"]:
        raise ValueError(f"{held_out}: the held-out model must be fitted on the train split only, it was on {splits}")
    epochs = metrics.get("best_epoch")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"{held_out}: metrics.json best_epoch is {epochs!r}, expected an epoch count >= 1")
    from trainer.training.id_dropout_choice import train_config

    config = train_config({k: v for k, v in saved.items() if k in {f.name for f in dataclasses.fields(TrainConfig)}})
    return dataclasses.replace(config, id_dropout_choices=(), refit=False, final_epochs=epochs)
