"""Training the two-tower model on a TRANSFORM_DIR and writing the model directory.

`train_model(transform_dir, output_root, config)` is the one entry point (the CLI and the Kubeflow
component wrap it). Each epoch logs one line with the mean loss and the recall@K on the
VALIDATION split (each user's second-to-last view; exact search over the corpus, the user's
earlier views excluded, as `candidates evaluate` does); training stops when that recall has not
improved for `early_stopping_patience` epochs and the best epoch's weights are restored before
export. The TEST split (each user's last view) is never read here: it is only reported, by
`candidates evaluate`, and read by the publish gate.

With `TrainConfig.refit` (production mode) the model is then trained again from scratch on every
split (train, validation and test: everything up to as_of) for the epoch count chosen on
validation, and that model is exported; `metrics.json` says which under `fit`.

With `TrainConfig.final_epochs` (the pipeline's final fit, after a held-out run has given the test
figures) nothing is validated: a fresh model is trained on every split for that many epochs (the
count the held-out run chose on validation), on a transform analysed over every split
(`TransformConfig.analyze_splits="all"`), so the listings first viewed after the held-out cut get
ids and vectors of their own; `metrics.json` `fit` records the splits and the time they reach.

With a `replication` of several workers (trainer/training/distributed.py) every worker runs this
function on its own share of the records; only the chief writes the model directory.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from homefeed import config as config_lib
from homefeed import features
from trainer.model import two_tower as model_lib
from trainer.training import data as data_lib
from trainer.training import distributed, id_dropout_choice
from trainer.training import export as export_lib
from trainer.training.epochs import fit, frozen_heap
from trainer.training.trainer import Trainer
from trainer.training.validation_set import (
    EvalSet,
    ReplayValidation,
    build_eval_set,
    corpus_index_of_ids,
    decode_strings,
    replay_validation,
    sample_validation_rows,
    serving_age_feature,
)

LOG = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """The written model: its directory, version, manifest and training metrics."""

    model_dir: Path
    model_version: str
    manifest: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def num_articles(self) -> int:
        return int(self.manifest["num_articles"])


def _refit(
    data: data_lib.TransformedData,
    config: config_lib.TrainConfig,
    epochs: int,
    corpus_ids: dict[str, np.ndarray],
    replication: distributed.Replication,
) -> tuple[model_lib.TwoTowerModel, data_lib.TrainingStatistics, dict[str, Any]]:
    """A fresh model trained on every split for `epochs` epochs (no early stopping): production
    mode; returns it with the statistics of every split and the training log (`epochs.fit`'s)."""
    stats = data_lib.training_statistics(data, None, features.SPLITS)
    batch_size = min(config.batch_size, stats.num_examples)
    keras.utils.set_random_seed(config.seed)
    with replication.scope():
        model = model_lib.TwoTowerModel(data.vocab, data.history_length, config)
        model.build_all()
        trainer = Trainer(model, stats, dataclasses.replace(config, epochs=max(epochs, 1)), replication.strategy)
    user_weights = data_lib.capped_user_weights(stats.examples_per_user, config.max_examples_per_user)
    dataset = replication.dataset(
        lambda shards, index, batch: data_lib.training_dataset(
            data,
            batch,
            config.shuffle_buffer,
            config.seed,
            config.cache_examples,
            splits=features.SPLITS,
            user_weights=user_weights,
            repeat=True,
            shard=(shards, index),
        ),
        batch_size,
    )
    with frozen_heap():
        log = fit(trainer, dataset, stats.num_examples // batch_size, None, corpus_ids)
    return model, stats, log


def _held_out_fit(
    data: data_lib.TransformedData,
    config: config_lib.TrainConfig,
    corpus: Any,
    corpus_ids: dict[str, np.ndarray],
    transform_layer: Any,
    replication: distributed.Replication,
) -> tuple[config_lib.TrainConfig, model_lib.TwoTowerModel, data_lib.TrainingStatistics, dict[str, Any]]:
    """The model trained on the train split, epochs (and id dropout) chosen on validation; refitted
    on every split with `config.refit`. Returns (the chosen config, model, statistics, metrics)."""
    # Validation ranked by the test split's function (trainer/training/validation_set.py).
    eval_set: ReplayValidation | EvalSet | None = replay_validation(
        data, corpus, transform_layer, config, data.as_of_ms(corpus)
    )
    eval_rows = sample_validation_rows(data, config) if eval_set is None else {}
    users = set(decode_strings(eval_rows[features.USER_ID])) if features.USER_ID in eval_rows else set()
    stats = data_lib.training_statistics(data, users)
    batch_size = min(config.batch_size, stats.num_examples)
    steps_per_epoch = stats.num_examples // batch_size
    corpus_lookup = corpus_index_of_ids(corpus_ids[model_lib.LABEL_KEY], data.vocab.known_articles)
    if eval_rows:
        eval_set = build_eval_set(eval_rows, stats, corpus_lookup, data.vocab.known_articles)
        # Early stopping scores what the service answers: the serving example age for everyone.
        eval_set.features[model_lib.AGE_KEY] = serving_age_feature(transform_layer, len(eval_set))
    LOG.info(
        "%d training examples (%d steps of %d per epoch), %d validation examples, %d corpus articles (%d unseen in training)",
        stats.num_examples,
        steps_per_epoch,
        batch_size,
        0 if eval_set is None else len(eval_set),
        len(corpus),
        int((corpus_ids[model_lib.LABEL_KEY] >= data.vocab.known_articles).sum()),
    )

    user_weights = data_lib.capped_user_weights(stats.examples_per_user, config.max_examples_per_user)
    if user_weights:
        LOG.info(
            "%d users have more than %d training examples: their examples are weighted down to count %d",
            len(user_weights),
            config.max_examples_per_user,
            config.max_examples_per_user,
        )
    shuffle_buffer, seed, cache_examples = config.shuffle_buffer, config.seed, config.cache_examples
    dataset = replication.dataset(
        lambda shards, index, batch: data_lib.training_dataset(
            data,
            batch,
            shuffle_buffer,
            seed,
            cache_examples,
            user_weights=user_weights,
            repeat=True,
            shard=(shards, index),
        ),
        batch_size,
    )

    def fit_one(candidate: config_lib.TrainConfig) -> tuple[model_lib.TwoTowerModel, dict[str, Any]]:
        keras.utils.set_random_seed(candidate.seed)
        with replication.scope():
            model = model_lib.TwoTowerModel(data.vocab, data.history_length, candidate)
            model.build_all()
            trainer = Trainer(model, stats, candidate, replication.strategy)
        with frozen_heap():
            return model, fit(trainer, dataset, steps_per_epoch, eval_set, corpus_ids)

    # One model, or one per id dropout rate with the best on validation kept (trainer/training/id_dropout_choice.py).
    config, model, metrics = id_dropout_choice.fit_best(config, fit_one, eval_set is not None and len(eval_set) > 0)
    metrics["num_train_examples"] = stats.num_examples
    metrics["workers"] = replication.num_workers
    metrics["fit"] = {
        "splits": [features.TRAIN_SPLIT],
        "epochs": metrics["best_epoch"],
        "chosen_on": features.VALIDATION_SPLIT,
    }
    if config.refit:
        model, stats, _ = _refit(data, config, metrics["best_epoch"], corpus_ids, replication)
        metrics["fit"] = {
            "splits": list(features.SPLITS),
            "epochs": metrics["best_epoch"],
            "chosen_on": features.VALIDATION_SPLIT,
        }
        metrics["num_refit_examples"] = stats.num_examples
        LOG.info(
            "refitted on %d examples of every split for %d epochs (chosen on validation): the test "
            "split's figures of this model are no longer held out",
            stats.num_examples,
            metrics["best_epoch"],
        )

    return config, model, stats, metrics


def _final_fit(
    data: data_lib.TransformedData,
    config: config_lib.TrainConfig,
    corpus_ids: dict[str, np.ndarray],
    as_of_ms: float,
    replication: distributed.Replication,
) -> tuple[model_lib.TwoTowerModel, data_lib.TrainingStatistics, dict[str, Any]]:
    """The model to publish: every split (every view up to as_of) for `config.final_epochs` epochs."""
    analyzed = data.summary.get("analyzed_splits", "train")
    if analyzed != "all":
        LOG.warning(
            "final fit on a transform analysed over the %s split only: ids first viewed after it share "
            "the OOV rows (run the transform with analyze_splits=all)",
            analyzed,
        )
    model, stats, metrics = _refit(data, config, config.final_epochs, corpus_ids, replication)
    through = None if not np.isfinite(as_of_ms) else pd.Timestamp(as_of_ms, unit="ms", tz="UTC").isoformat()
    metrics["num_train_examples"] = stats.num_examples
    metrics["workers"] = replication.num_workers
    metrics["fit"] = {
        "splits": list(features.SPLITS),
        "epochs": config.final_epochs,
        "chosen_on": f"{features.VALIDATION_SPLIT}, by the held-out run",
        "vocabulary": analyzed,
        # Every view up to this time was trained on: figures from views before it are not held out.
        "through": through,
    }
    LOG.info(
        "final fit: %d examples of every split (views up to %s), %d epochs chosen on validation by the "
        "held-out run, vocabulary from the %s split(s)",
        stats.num_examples,
        through or "as_of",
        config.final_epochs,
        analyzed,
    )
    return model, stats, metrics


def _unreplicated(
    model: model_lib.TwoTowerModel, data: data_lib.TransformedData, config: config_lib.TrainConfig
) -> model_lib.TwoTowerModel:
    """A plain copy of a model built under a distribution strategy (mirrored variables): exported,
    it is the same SavedModel a one-process run writes."""
    plain = model_lib.TwoTowerModel(data.vocab, data.history_length, config)
    plain.build_all()
    if len(plain.weights) != len(model.weights):
        raise RuntimeError(f"the plain copy has {len(plain.weights)} weights, the trained model {len(model.weights)}")
    for target, source in zip(plain.weights, model.weights):
        target.assign(source.numpy())
    return plain


def train_model(
    transform_dir: str | os.PathLike,
    output_root: str | os.PathLike,
    config: config_lib.TrainConfig | None = None,
    model_version: str | None = None,
    replication: distributed.Replication = distributed.SINGLE_PROCESS,
) -> TrainResult:
    """Trains on TRANSFORM_DIR and writes OUT/<version>/ (docs/architecture.md, MODEL_DIR).

    Args:
      transform_dir: a finished `candidates transform` output.
      output_root: directory the versioned model directory is created in.
      config: model and training settings (defaults if None).
      model_version: the directory name; default: the UTC time (`20240301T120000Z`).
      replication: this process's place among data-parallel workers (`distributed.Replication`;
        alone by default). A worker other than the chief writes nothing and returns its training
        metrics with an empty manifest.

    Raises:
      FileNotFoundError: `transform_dir` is not a finished transform output.
      FileExistsError: OUT/<model_version> exists already.
      ValueError: the transform output is unusable (no training examples, empty corpus, ...).
    """
    config = config or config_lib.TrainConfig()
    started = time.monotonic()
    if model_version is not None:  # fail before training, not after
        export_lib.check_new_version(Path(output_root), model_version)
    data = data_lib.TransformedData.open(transform_dir)
    keras.utils.set_random_seed(config.seed)
    LOG.info(
        "training on %s: %d article ids (+%d OOV), attributes %s, H=%d",
        data.path,
        data.vocab.known_articles,
        data.num_oov_buckets,
        dict(data.vocab.attributes) or "none",
        data.history_length,
    )
    corpus = data.read_corpus()
    transform_layer = data.tft_output.transform_features_layer()
    # The corpus as the service sees it: ages at as_of (what the export's vectors use too).
    as_of_ms = data.as_of_ms(corpus)
    corpus_ids = data_lib.transform_corpus(transform_layer, corpus, data.attributes, as_of_ms)

    if config.final_epochs:
        model, stats, metrics = _final_fit(data, config, corpus_ids, as_of_ms, replication)
    else:
        config, model, stats, metrics = _held_out_fit(data, config, corpus, corpus_ids, transform_layer, replication)

    if replication.strategy is not None:
        if not replication.is_chief:
            LOG.info("worker %d: trained; waiting for the chief to write the model directory", replication.worker_index)
            replication.barrier()
            return TrainResult(Path(output_root) / (model_version or ""), model_version or "", {}, metrics)
        model = _unreplicated(model, data, config)

    vocabulary = data.article_vocabulary()
    label_counts = {vocabulary[i]: int(c) for i, c in enumerate(stats.label_counts[: len(vocabulary)]) if c}
    artifacts = export_lib.ModelArtifacts(
        corpus=corpus,
        label_counts=label_counts,
        train_config=config,
        metrics=metrics,
        extra_config={
            "transform_dir": str(data.path),
            "transform": data.summary.get("config", {}),
            "history_length": data.history_length,
            "attributes": list(data.attributes),
            "vocabulary_sizes": {
                "article": data.vocab.known_articles,
                **{a: s - data.num_oov_buckets for a, s in data.vocab.attributes.items()},
            },
            "num_oov_buckets": data.num_oov_buckets,
        },
        vocab_hash=data.vocabulary_hash(),
        num_train_examples=stats.num_examples,
        as_of_ms=as_of_ms,
    )
    module = export_lib.ServingModule(model, transform_layer, data.attributes)
    model_dir, manifest = export_lib.write_model_dir(module, artifacts, output_root, model_version)
    replication.barrier()  # the other workers end now
    metrics["total_seconds"] = round(time.monotonic() - started, 2)
    LOG.info(
        "trained in %.1f s (%d epochs, best %d with validation recall@%d %s); total %.1f s",
        metrics["train_seconds"],
        metrics["epochs_run"],
        metrics["best_epoch"],
        metrics["validation_k"],
        "n/a" if metrics["best_validation_recall"] is None else f"{metrics['best_validation_recall']:.4f}",
        metrics["total_seconds"],
    )
    return TrainResult(model_dir, manifest["model_version"], manifest, metrics)
