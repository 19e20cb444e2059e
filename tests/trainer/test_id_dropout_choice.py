"""Id dropout chosen on validation (trainer/training/id_dropout_choice.py): the candidates, the pick, the record."""

from __future__ import annotations

import json

import pytest

from homefeed.config import TrainConfig
from homefeed.config_flags import given_config_values
from homefeed.layout import model_dir as layout
from homefeed_cli import cli
from trainer.training import id_dropout_choice
from trainer.training.id_dropout_choice import train_config

pytestmark = pytest.mark.timeout(900)  # its slow test builds conftest.py's session stages when first


def _fit_with(recalls: dict[float, float | None]):
    """A `fit_one` whose validation recall is looked up by rate; it records what it trained."""
    trained: list[float] = []

    def fit_one(config: TrainConfig):
        trained.append(config.id_dropout)
        return f"model-{config.id_dropout}", {
            "best_validation_recall": recalls[config.id_dropout],
            "train_seconds": 1.5,
        }

    return fit_one, trained


def test_the_best_validation_recall_wins_and_every_candidate_is_recorded():
    fit_one, trained = _fit_with({0.0: 0.30, 0.5: 0.34, 0.2: 0.34})
    config = TrainConfig(id_dropout_choices=(0.0, 0.5, 0.2, 0.5))
    chosen, model, metrics = id_dropout_choice.fit_best(config, fit_one, has_validation=True)
    assert trained == [0.0, 0.5, 0.2]  # each distinct rate once, in the order given
    assert chosen.id_dropout == 0.5 and model == "model-0.5"  # a tie keeps the earlier rate
    assert chosen.id_dropout_choices == (0.0, 0.5, 0.2, 0.5)
    record = metrics[id_dropout_choice.METRICS_KEY]
    assert record == {
        "chosen": 0.5,
        "validation_recall": {"0.0": 0.30, "0.5": 0.34, "0.2": 0.34},
        "train_seconds": {"0.0": 1.5, "0.5": 1.5, "0.2": 1.5},
    }
    assert metrics["train_seconds"] == 4.5 and metrics["best_validation_recall"] == 0.34


def test_one_model_without_choices_or_without_validation():
    fit_one, trained = _fit_with({0.3: None, 0.0: None})
    chosen, _, metrics = id_dropout_choice.fit_best(TrainConfig(id_dropout=0.3, id_dropout_choices=()), fit_one, True)
    assert trained == [0.3] and chosen.id_dropout == 0.3 and id_dropout_choice.METRICS_KEY not in metrics
    chosen, _, metrics = id_dropout_choice.fit_best(TrainConfig(id_dropout=0.3), fit_one, has_validation=False)
    assert trained == [0.3, 0.3] and id_dropout_choice.METRICS_KEY not in metrics


def test_asking_for_a_rate_turns_the_choice_off():
    assert TrainConfig().id_dropout_choices == (0.0, 0.9)
    assert train_config({"id_dropout": 0.2}).id_dropout_choices == ()
    assert train_config({"id_dropout": 0.2, "id_dropout_choices": [0.1, 0.3]}).id_dropout_choices == (0.1, 0.3)
    assert train_config({}) == TrainConfig()
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--transformed", "t", "--out", "o", "--id-dropout", "0.2"])
    assert train_config(given_config_values(TrainConfig, args)).id_dropout_choices == ()
    args = parser.parse_args(["train", "--transformed", "t", "--out", "o", "--id-dropout-choices", "0", "0.8"])
    assert train_config(given_config_values(TrainConfig, args)).id_dropout_choices == (0.0, 0.8)
    with pytest.raises(ValueError, match=r"id_dropout_choices must be in \[0, 1\), got 0.5, \(0.0, 1.0\)"):
        TrainConfig(id_dropout_choices=(0.0, 1.0))


@pytest.mark.slow
def test_training_keeps_the_model_of_the_chosen_rate(transform_dir, tmp_path):
    from trainer_testdata import SMALL_TRAIN_CONFIG

    from trainer.training.train import train_model

    config = TrainConfig(**{**SMALL_TRAIN_CONFIG, "epochs": 3, "id_dropout_choices": (0.0, 0.5)})
    result = train_model(transform_dir, tmp_path, config, model_version="choice")
    record = result.metrics[id_dropout_choice.METRICS_KEY]
    recalls = record["validation_recall"]
    assert set(recalls) == {"0.0", "0.5"}
    best = max(recalls, key=lambda rate: (recalls[rate], -float(rate)))
    assert record["chosen"] == float(best)
    assert result.metrics["best_validation_recall"] == recalls[best]
    saved = json.loads((result.model_dir / layout.CONFIG_FILE).read_text())["train"]
    assert saved["id_dropout"] == record["chosen"] and saved["id_dropout_choices"] == [0.0, 0.5]
    on_disk = json.loads((result.model_dir / layout.METRICS_FILE).read_text())
    assert on_disk[id_dropout_choice.METRICS_KEY] == record
