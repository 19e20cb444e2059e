"""The library functions the Kubeflow components call (their full runs: tests/test_end_to_end.py)."""

from __future__ import annotations

from components.evaluate.evaluate_into import fit_description, ui_metrics


def test_ui_metrics_name_the_model_and_each_baseline():
    result = {
        "model": {"recall@200": 0.5, "ndcg@10": 0.1},
        "baselines": {"popularity": {"recall@200": 0.2}, "item_knn": {"recall@200": 0.3, "ndcg@10": 0.05}},
        "num_users": 40,
    }
    assert ui_metrics(result) == {
        "recall@200": 0.5,
        "ndcg@10": 0.1,
        "popularity_recall@200": 0.2,
        "item_knn_recall@200": 0.3,
        "item_knn_ndcg@10": 0.05,
        "num_users": 40,
    }


def test_fit_description_says_how_the_model_was_fitted():
    fit = {"splits": ["train", "validation"], "epochs": 7, "chosen_on": "validation"}
    assert fit_description({"fit": fit}) == "train+validation, 7 epochs chosen on validation"
    assert fit_description({}) == ", None epochs chosen on None"


def _held_out_dir(tmp_path, train: dict, metrics: dict):
    import json

    (tmp_path / "config.json").write_text(json.dumps({"train": train, "history_length": 10}))
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    return tmp_path


def test_the_final_fit_takes_the_held_out_models_settings_and_best_epoch(tmp_path):
    import dataclasses

    import pytest

    from components.train.train_into import final_config
    from homefeed.config import TrainConfig, to_dict

    chosen = dataclasses.replace(TrainConfig(), id_dropout=0.9, id_dropout_choices=(0.0, 0.9), seed=7, epochs=12)
    held_out = _held_out_dir(tmp_path, to_dict(chosen), {"best_epoch": 4, "fit": {"splits": ["train"], "epochs": 4}})
    config = final_config(held_out)
    assert config.final_epochs == 4 and config.id_dropout == 0.9 and config.id_dropout_choices == ()
    assert config.seed == 7 and not config.refit
    assert dataclasses.replace(config, final_epochs=0, id_dropout_choices=(0.0, 0.9)) == chosen

    refit = _held_out_dir(tmp_path, to_dict(chosen), {"best_epoch": 4, "fit": {"splits": ["train", "test"]}})
    with pytest.raises(ValueError, match="fitted on the train split only"):
        final_config(refit)
    no_epoch = _held_out_dir(tmp_path, to_dict(chosen), {"best_epoch": None, "fit": {"splits": ["train"]}})
    with pytest.raises(ValueError, match="best_epoch is None"):
        final_config(no_epoch)
    with pytest.raises(ValueError, match="not a model directory"):
        final_config(tmp_path / "missing")
