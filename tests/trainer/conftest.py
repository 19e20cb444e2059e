"""Shared, expensive fixtures for the trainer tests: one real transform run and one trained model.

Both run at most once per session and only when a test that needs them runs (those tests are
marked slow). The data has planted structure (see trainer_testdata).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from trainer_testdata import SMALL_TRAIN_CONFIG, H, write_extract_dir

from homefeed.config import TrainConfig, TransformConfig


@dataclass
class Trained:
    extract_dir: Path
    transform_dir: Path
    models_root: Path
    result: object  # trainer.training.train.TrainResult
    config: TrainConfig


@pytest.fixture(scope="session")
def extract_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_extract_dir(tmp_path_factory.mktemp("trainer") / "extract")


@pytest.fixture(scope="session")
def transform_dir(extract_dir: Path) -> Path:
    from components.transform.job import run_transform

    out = extract_dir.parent / "transform"
    run_transform(str(extract_dir), str(out), TransformConfig(history_length=H))
    return out


@pytest.fixture(scope="session")
def trained(extract_dir: Path, transform_dir: Path) -> Trained:
    from trainer.training.train import train_model

    config = TrainConfig(**SMALL_TRAIN_CONFIG)
    root = extract_dir.parent / "models"
    result = train_model(transform_dir, root, config, model_version="m1")
    return Trained(extract_dir, transform_dir, root, result, config)
