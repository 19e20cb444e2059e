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
import tensorflow as tf

from homefeed import config as config_lib
from homefeed import features
from trainer import data as data_lib
from trainer import dense_step
from trainer.epochs import fit, frozen_heap
from trainer import export as export_lib
from trainer import id_dropout_choice
from trainer import lazy_adam
from trainer import loss as loss_lib
from trainer import metrics as metrics_lib
from trainer import model as model_lib
from trainer import validation_set
from trainer.validation_set import (
    EvalSet,
    build_eval_set,
    corpus_index_of_ids,
    decode_strings,
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


class Trainer:
    """The training loop state: model, optimizer, sampling tables and the compiled step."""

    def __init__(
        self,
        model: model_lib.TwoTowerModel,
        stats: data_lib.TrainingStatistics,
        config: config_lib.TrainConfig,
    ):
        self.model = model
        self.config = config
        optimizer = lazy_adam.LazyAdam if config.lazy_adam else keras.optimizers.Adam
        self.optimizer = optimizer(learning_rate=config.learning_rate)
        probabilities = stats.label_counts / max(stats.label_counts.sum(), 1)
        self.log_label_probabilities = tf.constant(np.log(np.maximum(probabilities, 1e-12)), tf.float32)
        self.attribute_tables = {a: tf.constant(t, tf.int32) for a, t in stats.article_attributes.items()}
        self.content_tables = {k: tf.constant(t, tf.int32) for k, t in stats.article_content.items()}
        self.num_sampleable = max(model.vocab.known_articles, 1)
        self.sampler = tf.random.Generator.from_seed(config.seed + 1)
        self.optimizer.build(model.trainable_variables)
        # Keras's Adam takes an embedding's IndexedSlices gradient sparsely for its moments but
        # then updates every row of the table, in several unfused passes (each allocating a
        # table-sized temporary): at 10^5 articles that was most of a step. `fused_adam` compiles
        # the same update with XLA into one pass (44 -> 18 CPU-ms for a 10^5 x 64 table; equal
        # up to rounding, tests/trainer/test_train_speed.py).
        self._apply_gradients = tf.function(self._apply, jit_compile=True) if config.fused_adam else self._apply
        self.step = tf.function(self._step, reduce_retracing=True)
        self._dense_loss = dense_step.dense_loss(model, config)

    def _apply(self, gradients: list[tf.Tensor]) -> None:
        self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))

    def _step(self, batch: dict[str, tf.Tensor]) -> tf.Tensor:
        loss, gradients = self.loss_and_gradients(batch)
        self._apply_gradients(gradients)
        return loss

    def loss_and_gradients(self, batch: dict[str, tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """One training step's forward and backward pass (no update): the loss and the gradients of
        `model.trainable_variables` (embedding tables' as `tf.IndexedSlices`)."""
        config = self.config
        labels = batch[model_lib.LABEL_KEY]
        candidate_ids = labels
        candidate_attributes = {a: batch[model_lib.label_attribute_key(a)] for a in self.model.attributes}
        candidate_content = {k: batch[k] for k in self.content_tables if k in batch}
        if config.num_sampled_negatives:
            sampled = self.sampler.uniform([config.num_sampled_negatives], 0, self.num_sampleable, dtype=tf.int32)
            candidate_ids = tf.concat([labels, sampled], axis=0)
            for attr in self.model.attributes:
                extra = tf.gather(self.attribute_tables[attr], sampled)
                candidate_attributes[attr] = tf.concat([candidate_attributes[attr], extra], axis=0)
            for key in candidate_content:
                candidate_content[key] = tf.concat([candidate_content[key], tf.gather(self.content_tables[key], sampled)], axis=0)
        log_q = None
        if config.logq_correction:
            log_q = loss_lib.log_expected_counts(
                candidate_ids,
                self.log_label_probabilities,
                tf.shape(labels)[0],
                config.num_sampled_negatives,
                self.num_sampleable,
            )
        with tf.GradientTape() as tape:
            # Id dropout: the tower sees some labels as OOV ids (new listings); the loss still
            # compares the true ids (accidental hits, logQ). The lookups, then the dense part
            # (XLA-compiled with `xla_dense`; trainer/dense_step.py).
            user_lookups = self.model.user_lookups(batch, training=True)
            article_lookups = self.model.article_lookups(self.model.drop_ids(candidate_ids), candidate_attributes, candidate_content)
            weights = batch.get(data_lib.EXAMPLE_WEIGHT_KEY)
            loss = self._dense_loss(user_lookups, article_lookups, labels, candidate_ids, log_q, weights)
        return loss, tape.gradient(loss, self.model.trainable_variables)

    def eval_recall(self, eval_set: EvalSet, corpus_ids: dict[str, np.ndarray], k: int) -> float:
        """Recall@k of the current weights on `eval_set`, exact search over the corpus."""
        return metrics_lib.recall_at_k(self.eval_ranks(eval_set, corpus_ids), k)

    def eval_ranks(self, eval_set: EvalSet, corpus_ids: dict[str, np.ndarray]) -> np.ndarray:
        """Target ranks (see `metrics.target_ranks`) of the current weights on `eval_set`."""
        article_vectors = self.model.article_vectors(
            corpus_ids[model_lib.LABEL_KEY],
            {a: corpus_ids[model_lib.label_attribute_key(a)] for a in self.model.attributes},
            {k: corpus_ids[k] for k in model_lib.CONTENT_KEYS if k in corpus_ids},
        ).numpy()
        parts = []
        for start in range(0, len(eval_set), 4096):
            batch = {key: value[start : start + 4096] for key, value in eval_set.features.items() if key != features.USER_ID}
            parts.append(self.model.user_vectors(batch, training=False).numpy())
        # Targets without a corpus row (new listings) are ranked by their own vectors (validation_set).
        own = None
        if eval_set.own_target is not None and eval_set.own_target.any():
            own = self.model.article_vectors(*validation_set.label_inputs(eval_set, self.model.attributes)).numpy()
        return validation_set.target_ranks(np.concatenate(parts), article_vectors, eval_set, target_vectors=own)

    def snapshot(self) -> list[np.ndarray]:
        return [v.numpy() for v in self.model.weights]

    def restore(self, weights: list[np.ndarray]) -> None:
        for variable, value in zip(self.model.weights, weights):
            variable.assign(value)


def _refit(
    data: data_lib.TransformedData,
    config: config_lib.TrainConfig,
    epochs: int,
    corpus_ids: dict[str, np.ndarray],
) -> tuple[model_lib.TwoTowerModel, data_lib.TrainingStatistics]:
    """A fresh model trained on every split for `epochs` epochs (no early stopping): production mode."""
    stats = data_lib.training_statistics(data, None, features.SPLITS)
    batch_size = min(config.batch_size, stats.num_examples)
    keras.utils.set_random_seed(config.seed)
    model = model_lib.TwoTowerModel(data.vocab, data.history_length, config)
    model.build_all()
    trainer = Trainer(model, stats, dataclasses.replace(config, epochs=max(epochs, 1)))
    dataset = data_lib.training_dataset(
        data, batch_size, config.shuffle_buffer, config.seed, config.cache_examples, splits=features.SPLITS,
        user_weights=data_lib.capped_user_weights(stats.examples_per_user, config.max_examples_per_user), repeat=True,
    )
    fit(trainer, dataset, stats.num_examples // batch_size, None, corpus_ids)
    return model, stats


def train_model(
    transform_dir: str | os.PathLike,
    output_root: str | os.PathLike,
    config: config_lib.TrainConfig | None = None,
    model_version: str | None = None,
) -> TrainResult:
    """Trains on TRANSFORM_DIR and writes OUT/<version>/ (docs/architecture.md, MODEL_DIR).

    Args:
      transform_dir: a finished `candidates transform` output.
      output_root: directory the versioned model directory is created in.
      config: model and training settings (defaults if None).
      model_version: the directory name; default: the UTC time (`20240301T120000Z`).

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

    eval_rows = sample_validation_rows(data, config)
    users = set(decode_strings(eval_rows[features.USER_ID])) if features.USER_ID in eval_rows else set()
    stats = data_lib.training_statistics(data, users)
    batch_size = min(config.batch_size, stats.num_examples)
    steps_per_epoch = stats.num_examples // batch_size
    corpus_lookup = corpus_index_of_ids(corpus_ids[model_lib.LABEL_KEY], data.vocab.known_articles)
    eval_set = build_eval_set(eval_rows, stats, corpus_lookup, data.vocab.known_articles) if eval_rows else None
    if eval_set is not None:
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
        LOG.info("%d users have more than %d training examples: their examples are weighted down to count %d",
                 len(user_weights), config.max_examples_per_user, config.max_examples_per_user)  # fmt: skip
    dataset = data_lib.training_dataset(
        data, batch_size, config.shuffle_buffer, config.seed, config.cache_examples, user_weights=user_weights, repeat=True
    )

    def fit_one(candidate: config_lib.TrainConfig) -> tuple[model_lib.TwoTowerModel, dict[str, Any]]:
        keras.utils.set_random_seed(candidate.seed)
        model = model_lib.TwoTowerModel(data.vocab, data.history_length, candidate)
        model.build_all()
        with frozen_heap():
            return model, fit(Trainer(model, stats, candidate), dataset, steps_per_epoch, eval_set, corpus_ids)

    # One model, or one per id dropout rate with the best on validation kept (trainer/id_dropout_choice.py).
    config, model, metrics = id_dropout_choice.fit_best(config, fit_one, eval_set is not None and len(eval_set) > 0)
    metrics["num_train_examples"] = stats.num_examples
    metrics["fit"] = {"splits": [features.TRAIN_SPLIT], "epochs": metrics["best_epoch"], "chosen_on": features.VALIDATION_SPLIT}
    if config.refit:
        model, stats = _refit(data, config, metrics["best_epoch"], corpus_ids)
        metrics["fit"] = {"splits": list(features.SPLITS), "epochs": metrics["best_epoch"], "chosen_on": features.VALIDATION_SPLIT}
        metrics["num_refit_examples"] = stats.num_examples
        LOG.info(
            "refitted on %d examples of every split for %d epochs (chosen on validation): the test "
            "split's figures of this model are no longer held out",
            stats.num_examples,
            metrics["best_epoch"],
        )

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
            "vocabulary_sizes": {"article": data.vocab.known_articles, **{a: s - data.num_oov_buckets for a, s in data.vocab.attributes.items()}},
            "num_oov_buckets": data.num_oov_buckets,
        },
        vocab_hash=data.vocabulary_hash(),
        num_train_examples=stats.num_examples,
        as_of_ms=as_of_ms,
    )
    module = export_lib.ServingModule(model, transform_layer, data.attributes)
    model_dir, manifest = export_lib.write_model_dir(module, artifacts, output_root, model_version)
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
