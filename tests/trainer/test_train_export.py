"""Training on generated data with planted structure, the exported model directory and evaluation.

One real transform run and one training run are shared by these tests (see conftest.py).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from trainer_testdata import NEW_ARTICLE, category, created_at, region, title

from homefeed import features
from homefeed.config import EvaluateConfig, TrainConfig
from homefeed.layout import extract_dir as extract_layout
from homefeed.layout import model_dir as layout
from trainer.evaluation import replay

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
]  # the first test to ask builds conftest.py's session stages (Beam transform, training)


def _raw_articles(ids: list[str], now_ms: float) -> dict:
    import tensorflow as tf

    ages = [(now_ms - created_at(a).value / 1e6) / 86_400_000 for a in ids]
    return {
        features.LABEL: tf.constant(ids),
        features.label_attribute("category"): tf.constant([category(a) for a in ids]),
        features.label_attribute("region"): tf.constant([region(a) for a in ids]),
        features.LABEL_TITLE: tf.constant([title(a).lower() for a in ids]),
        features.LABEL_AGE: tf.constant(ages, tf.float32),
    }


def test_model_directory_layout_and_manifest(trained):
    model_dir = trained.result.model_dir
    assert model_dir == trained.models_root / "m1"
    assert layout.is_finished_model_dir(model_dir, verify_hashes=True)
    manifest = layout.load_manifest(model_dir)
    for name in (
        layout.ARTICLE_VECTORS_FILE,
        layout.ARTICLE_IDS_FILE,
        layout.ARTICLES_FILE,
        layout.POPULAR_FILE,
        layout.CONFIG_FILE,
        layout.METRICS_FILE,
        "saved_model/saved_model.pb",
    ):
        assert name in manifest["files"], name
    vectors = np.load(model_dir / layout.ARTICLE_VECTORS_FILE)
    ids = (model_dir / layout.ARTICLE_IDS_FILE).read_text().splitlines()
    corpus = pd.read_parquet(trained.extract_dir / extract_layout.CORPUS_FILE)
    assert ids == corpus["article_id"].tolist()  # every corpus article, in corpus order
    assert (
        vectors.shape == (len(ids), trained.config.output_dim) == (manifest["num_articles"], manifest["embedding_dim"])
    )
    assert vectors.dtype == np.float32
    assert manifest["article_vectors_sha256"] == layout.sha256_file(model_dir / layout.ARTICLE_VECTORS_FILE)
    assert len(manifest["vocab_hash"]) == 64
    config = json.loads((model_dir / layout.CONFIG_FILE).read_text())
    assert config["train"]["output_dim"] == trained.config.output_dim and config["history_length"] == 10
    metrics = json.loads((model_dir / layout.METRICS_FILE).read_text())
    assert len(metrics["epochs"]) == metrics["epochs_run"] >= metrics["best_epoch"] >= 1
    assert all(np.isfinite(e["loss"]) for e in metrics["epochs"])
    popular = json.loads((model_dir / layout.POPULAR_FILE).read_text())["articles"]
    counts = [p["count"] for p in popular]
    assert len(popular) == 20 and counts == sorted(counts, reverse=True) and counts[0] > 0
    assert NEW_ARTICLE not in {p["article_id"] for p in popular}
    assert not [p for p in trained.models_root.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_article_vectors_are_what_the_saved_model_computes(trained):
    import tensorflow as tf

    model_dir = trained.result.model_dir
    loaded = tf.saved_model.load(str(model_dir / layout.SAVED_MODEL_DIR))
    ids = (model_dir / layout.ARTICLE_IDS_FILE).read_text().splitlines()
    vectors = np.load(model_dir / layout.ARTICLE_VECTORS_FILE)
    sample = [0, 17, len(ids) - 1]
    # The corpus vectors are made with ages at the data's "now" (no extract summary here: the
    # newest created_at), recorded in the manifest.
    now_ms = layout.load_manifest(model_dir)["article_ages_at_ms"]
    assert now_ms == created_at(NEW_ARTICLE).value / 1e6
    recomputed = loaded.signatures["article_vectors"](**_raw_articles([ids[i] for i in sample], now_ms))[
        "article_vector"
    ]
    np.testing.assert_allclose(recomputed.numpy(), vectors[sample], rtol=1e-5, atol=1e-6)


def test_signature_takes_raw_strings_unknown_ids_empty_histories_and_padding(trained):
    from trainer.towers.serving_model import UserEncoder

    encoder = UserEncoder(trained.result.model_dir, history_length=10)
    assert encoder.dim == trained.config.output_dim
    rows = [
        {
            features.HISTORY: ["a003", "a002", "a001"],
            features.history_attribute("category"): ["c0"] * 3,
            features.history_attribute("region"): ["r1", "r0", "r1"],
        },
        {features.HISTORY: ["never-seen-id", "a010"]},  # unknown id; attributes filled with __missing__
        {features.HISTORY: []},  # a user without history
    ]
    vectors = encoder.encode(rows)
    assert vectors.shape == (3, trained.config.output_dim) and np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # Padding never changes a vector: the same user alone (narrow) and next to a long history (wide).
    alone = encoder.encode(rows[:1])
    padded = encoder.encode([rows[0], {features.HISTORY: [f"a{i:03d}" for i in range(30)]}])[:1]
    # float32 sums reduce in batch-dependent blocks: ~1e-7 apart is rounding, not a padding effect
    np.testing.assert_allclose(alone, padded, rtol=1e-5, atol=1e-6)
    # Histories longer than H: only the most recent H count.
    long = {features.HISTORY: [f"a{i:03d}" for i in range(25)]}
    cut = {features.HISTORY: [f"a{i:03d}" for i in range(10)]}
    np.testing.assert_allclose(encoder.encode([long]), encoder.encode([cut]), rtol=1e-6)
    # Per-row ages are accepted and matter (the age is a model input).
    aged = encoder.encode(rows[:1] * 2, example_age_days=[0.0, 300.0])
    assert not np.allclose(aged[0], aged[1])


def test_training_beats_popularity_by_far_on_the_test_split(trained):
    from trainer.evaluation.evaluate import evaluate_model

    result = evaluate_model(trained.result.model_dir, trained.extract_dir, EvaluateConfig(ks=(5, 10, 20)))
    model, popularity = result["model"], result["popularity"]
    assert result["num_users"] == 300 and result["split"] == features.TEST_SPLIT
    assert model["recall@10"] >= popularity["recall@10"] + 0.3, result
    assert model["recall@5"] >= 2 * popularity["recall@5"], result
    assert result["recall@10"] == model["recall@10"]  # the gate reads the top level
    # The planted data has no view times and no extract summary: no as_of, so no trending baseline.
    assert set(result["baselines"]) == {"popularity", "item_knn", "category_region"} and result["as_of"] is None
    assert result["fit"] == {
        "splits": [features.TRAIN_SPLIT],
        "epochs": trained.result.metrics["best_epoch"],
        "chosen_on": features.VALIDATION_SPLIT,
    }
    # Within a few epochs: the first epoch whose validation recall@10 beats popularity by 0.3.
    training = trained.result.metrics
    assert training["validation_k"] == 10 and training["validation_examples"] == 300
    first_good = next(
        e["epoch"] for e in training["epochs"] if e["validation_recall@10"] >= popularity["recall@10"] + 0.3
    )
    assert first_good <= 5, training["epochs"]
    written = json.loads((trained.result.model_dir / layout.EVALUATION_FILE).read_text())
    assert written["model"] == model and written["baselines"] == result["baselines"]
    assert written["protocol"] == {
        "split": features.TEST_SPLIT,
        "split_protocol": {"protocol": "per-user"},  # an extract that does not say: the leave-last-out split
        "example_age": "serving",
        "seen_excluded": replay.SEEN_DEFINITION,
        "corpus": "as_of snapshot",
    }  # no view times: the as_of corpus
    png = (trained.result.model_dir / layout.EVALUATION_PLOT_FILE).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    page = (trained.result.model_dir / layout.PREDICTIONS_PAGE_FILE).read_text()
    assert page.startswith("<!DOCTYPE html>") and "held-out view" in page and "Brand new " in page  # titles shown
    assert not [p for p in trained.result.model_dir.iterdir() if p.name.startswith(".")]


def test_evaluation_reads_only_the_test_split_and_agrees_with_training(trained, tmp_path):
    """The SavedModel path (raw strings, UserEncoder) reproduces the in-training validation figure
    when the validation rows are presented as the test split (and the real test rows are gone)."""
    import shutil

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from trainer.evaluation.evaluate import evaluate_model

    extract = tmp_path / "extract"
    shutil.copytree(trained.extract_dir, extract)
    path = extract / extract_layout.TRAINING_EXAMPLES_FILE
    table = pq.read_table(path)
    split = table.column(features.SPLIT)
    table = table.filter(pc.not_equal(split, features.TEST_SPLIT))
    relabelled = pc.replace_substring(table.column(features.SPLIT), features.VALIDATION_SPLIT, features.TEST_SPLIT)
    table = table.set_column(table.schema.get_field_index(features.SPLIT), features.SPLIT, relabelled)
    pq.write_table(table, path)
    model = tmp_path / "model"
    shutil.copytree(trained.result.model_dir, model)
    result = evaluate_model(model, extract, EvaluateConfig(ks=(10,)))
    assert result["recall@10"] == pytest.approx(trained.result.metrics["best_validation_recall"], abs=1.5 / 300)


def test_existing_version_is_never_overwritten_and_failures_leave_no_model(trained, monkeypatch):
    from trainer.training import export
    from trainer.training.train import train_model

    before = layout.sha256_file(trained.result.model_dir / layout.MANIFEST_FILE)
    quick = TrainConfig(**{**trained.config.__dict__, "epochs": 1})
    with pytest.raises(FileExistsError, match="never overwritten"):
        train_model(trained.transform_dir, trained.models_root, quick, model_version="m1")
    assert layout.sha256_file(trained.result.model_dir / layout.MANIFEST_FILE) == before

    # A crash while writing (here: in the smoke test after saving) leaves neither a model nor a staging dir.
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "_smoke_test", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        train_model(trained.transform_dir, trained.models_root, quick, model_version="m2")
    assert sorted(os.listdir(trained.models_root)) == ["m1"]
    assert layout.resolve_model_dir(trained.models_root) == trained.result.model_dir


def test_same_seed_same_model(trained, tmp_path):
    from trainer.training.train import train_model

    quick = TrainConfig(**{**trained.config.__dict__, "epochs": 2, "num_sampled_negatives": 16, "dropout": 0.1})
    first = train_model(trained.transform_dir, tmp_path, quick, model_version="a")
    second = train_model(trained.transform_dir, tmp_path, quick, model_version="b")
    a = np.load(first.model_dir / layout.ARTICLE_VECTORS_FILE)
    b = np.load(second.model_dir / layout.ARTICLE_VECTORS_FILE)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert [e["loss"] for e in first.metrics["epochs"]] == pytest.approx(
        [e["loss"] for e in second.metrics["epochs"]], rel=1e-4
    )


def test_cli_trains_without_a_validation_split_and_evaluates(trained, tmp_path, capsys):
    import shutil

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from homefeed_cli import cli

    transform = tmp_path / "transform"
    shutil.copytree(trained.transform_dir, transform)
    for part in (transform / features.VALIDATION_SPLIT).glob("*"):
        part.unlink()  # no validation examples: no early stopping, the last epoch is kept
    # Validation replays the extract's validation views (trainer/evaluation/replay.py): its copy has none.
    extract = tmp_path / "extract"
    shutil.copytree(trained.extract_dir, extract)
    examples = pq.read_table(extract / extract_layout.TRAINING_EXAMPLES_FILE)
    examples = examples.filter(pc.not_equal(examples.column(features.SPLIT), features.VALIDATION_SPLIT))
    pq.write_table(examples, extract / extract_layout.TRAINING_EXAMPLES_FILE)
    summary = json.loads((transform / "transform_summary.json").read_text())
    (transform / "transform_summary.json").write_text(json.dumps({**summary, "examples_dir": str(extract)}))
    argv = [
        "train",
        "--transformed",
        str(transform),
        "--out",
        str(tmp_path / "models"),
        "--version",
        "cli",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--embedding-dim",
        "8",
        "--output-dim",
        "8",
        "--tower-units",
        "16",
    ]
    assert cli.main(argv) == 0
    assert "no validation examples, 2 epochs" in capsys.readouterr().out
    model_dir = tmp_path / "models" / "cli"
    metrics = json.loads((model_dir / layout.METRICS_FILE).read_text())
    assert metrics["best_validation_recall"] is None and metrics["best_epoch"] == 2
    assert cli.main(["evaluate", "--model", str(tmp_path / "models"), "--examples", str(trained.extract_dir)]) == 0
    out = capsys.readouterr().out
    assert "model cli on 300 test users" in out and "recall@200" in out and "item_knn" in out


def test_refit_trains_a_fresh_model_on_every_split_for_the_chosen_epochs(trained, tmp_path):
    from trainer.training.train import train_model

    config = TrainConfig(**{**trained.config.__dict__, "epochs": 2, "early_stopping_patience": 0, "refit": True})
    result = train_model(trained.transform_dir, tmp_path, config, model_version="refit")
    metrics = result.metrics
    assert metrics["fit"] == {
        "splits": list(features.SPLITS),
        "epochs": metrics["best_epoch"],
        "chosen_on": features.VALIDATION_SPLIT,
    }
    records = json.loads((trained.transform_dir / "transform_summary.json").read_text())["records_out"]
    assert metrics["num_refit_examples"] == sum(records.values()) > metrics["num_train_examples"]
    written = json.loads((result.model_dir / layout.METRICS_FILE).read_text())
    assert written["fit"] == metrics["fit"]


def test_final_fit_trains_on_every_split_for_the_given_epochs_without_validation(trained, tmp_path):
    from trainer.training.train import train_model

    config = TrainConfig(**{**trained.config.__dict__, "epochs": 9, "final_epochs": 2})
    result = train_model(trained.transform_dir, tmp_path, config, model_version="final")
    metrics = result.metrics
    assert metrics["epochs_run"] == 2 and metrics["validation_examples"] == 0
    assert metrics["best_validation_recall"] is None
    fit = metrics["fit"]
    assert fit["splits"] == list(features.SPLITS) and fit["epochs"] == 2
    assert fit["chosen_on"].startswith(features.VALIDATION_SPLIT) and fit["vocabulary"] == "train"
    assert fit["through"] is not None and fit["through"].startswith("20")
    records = json.loads((trained.transform_dir / "transform_summary.json").read_text())["records_out"]
    assert metrics["num_train_examples"] == sum(records.values())
    assert json.loads((result.model_dir / layout.METRICS_FILE).read_text())["fit"] == fit


def test_final_epochs_and_refit_are_not_both_set():
    with pytest.raises(ValueError, match="set one"):
        TrainConfig(final_epochs=2, refit=True)
