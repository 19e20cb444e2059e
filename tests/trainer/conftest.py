"""Shared, expensive fixtures for the trainer tests: one real transform run and one trained model.

Both run at most once per session and only when a test that needs them runs (those tests are
marked slow). The data has planted structure (see trainer_testdata).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from homefeed.config import TrainConfig, TransformConfig
from trainer_testdata import H, write_extract_dir

# Small and quick, still well able to learn the planted sequences.
SMALL_TRAIN_CONFIG = dict(
    embedding_dim=16,
    attribute_embedding_dim=8,
    tower_units=(32,),
    output_dim=16,
    recent_items=2,
    dropout=0.0,
    temperature=0.1,
    learning_rate=0.01,
    batch_size=64,
    epochs=12,
    early_stopping_patience=4,
    eval_k=10,  # the corpus has 61 articles: recall@200 would be 1.0 from the first epoch
    popular_articles=20,
    seed=3,
    id_dropout=0.5,  # one model per fixture (test_id_dropout_choice.py trains the choice)
    id_dropout_choices=(),
)


@dataclass
class Trained:
    extract_dir: Path
    transform_dir: Path
    models_root: Path
    result: object  # trainer.train.TrainResult
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
    from trainer.train import train_model

    config = TrainConfig(**SMALL_TRAIN_CONFIG)
    root = extract_dir.parent / "models"
    result = train_model(transform_dir, root, config, model_version="m1")
    return Trained(extract_dir, transform_dir, root, result, config)
