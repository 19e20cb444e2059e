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
