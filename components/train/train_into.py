"""The train task's library side: train into exactly the artifact's path.

The trainer writes `ROOT/<version>/` (version = UTC time); a Kubeflow `Output[Model]` has one fixed
path. `train_into` trains under a staging root beside that path and moves the finished model
directory into place with `homefeed.atomic.move_into_place` (fsynced, renamed; an earlier one
replaced), so the artifact holds a whole model directory or nothing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from homefeed import atomic, lifetime
from homefeed.config import TrainConfig


def train_into(transformed: str | os.PathLike, target: str | os.PathLike, config: TrainConfig) -> Any:
    """Trains on TRANSFORM_DIR `transformed` and leaves the MODEL_DIR at `target`.

    Returns:
      `trainer.training.train.train_model`'s result (`model_dir` is then `target`'s old staging place; use
      `target`).
    """
    from trainer.training.train import train_model  # heavy: TensorFlow

    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.train-"
    lifetime.remove_stale_dirs(target.parent, prefix)
    staging_root = lifetime.owned_dir(target.parent, prefix)
    try:
        result = train_model(os.fspath(transformed), staging_root, config)
        atomic.move_into_place(Path(result.model_dir), target, replace=True)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    return result
