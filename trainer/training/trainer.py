"""The training loop's state: model, optimizer, sampling tables, the compiled step and validation recall."""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from homefeed import config as config_lib
from homefeed import features
from trainer.evaluation import metrics as metrics_lib
from trainer.model import loss as loss_lib
from trainer.model import two_tower as model_lib
from trainer.training import data as data_lib
from trainer.training import dense_step, lazy_adam, validation_set
from trainer.training.validation_set import (
    EvalSet,
)

LOG = logging.getLogger(__name__)


class Trainer:
    """The training loop state: model, optimizer, sampling tables and the compiled step."""

    def __init__(
        self,
        model: model_lib.TwoTowerModel,
        stats: data_lib.TrainingStatistics,
        config: config_lib.TrainConfig,
        strategy: tf.distribute.Strategy | None = None,
    ):
        """`strategy`: the workers' `MultiWorkerMirroredStrategy` (trainer/training/distributed.py),
        in whose scope the model was built and this Trainer is made; None in one process."""
        self.model = model
        self.config = config
        self.strategy = strategy
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
        # table-sized temporary): at 10^5 articles that is most of a step. `fused_adam` compiles
        # the same update with XLA into one pass (18 instead of 44 CPU-ms for a 10^5 x 64 table; equal
        # up to rounding, tests/trainer/test_train_speed.py).
        # Under a strategy the optimizer all-reduces the gradients across workers: a collective XLA
        # does not compile here, so the update runs uncompiled.
        fused = config.fused_adam and strategy is None
        self._apply_gradients = tf.function(self._apply, jit_compile=True) if fused else self._apply
        self.step = tf.function(self._step if strategy is None else self._replicated_step, reduce_retracing=True)
        self._dense_loss = dense_step.dense_loss(model, config)

    def _apply(self, gradients: list[tf.Tensor]) -> None:
        self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))

    def _step(self, batch: dict[str, tf.Tensor]) -> tf.Tensor:
        loss, gradients = self.loss_and_gradients(batch)
        self._apply_gradients(gradients)
        return loss

    def _replicated_step(self, batch: Any) -> tf.Tensor:
        """`_step` on every worker's own batch; returns the mean of their losses."""
        assert self.strategy is not None
        losses = self.strategy.run(self._replica_step, args=(batch,))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    def _replica_step(self, batch: dict[str, tf.Tensor]) -> tf.Tensor:
        # Each worker's loss is the mean over its B/N examples: scaled by 1/N, the gradients summed
        # across workers (by the optimizer) are those of the mean over all B.
        scale = 1.0 / tf.distribute.get_replica_context().num_replicas_in_sync
        loss, gradients = self.loss_and_gradients(batch, scale)
        self._apply_gradients(gradients)
        return loss * scale

    def loss_and_gradients(
        self, batch: dict[str, tf.Tensor], gradient_scale: float = 1.0
    ) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """One training step's forward and backward pass (no update): the loss and the gradients of
        `model.trainable_variables` (embedding tables' as `tf.IndexedSlices`) of `loss * gradient_scale`."""
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
                candidate_content[key] = tf.concat(
                    [candidate_content[key], tf.gather(self.content_tables[key], sampled)], axis=0
                )
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
            # (XLA-compiled with `xla_dense`; trainer/training/dense_step.py).
            user_lookups = self.model.user_lookups(batch, training=True)
            article_lookups = self.model.article_lookups(
                self.model.drop_ids(candidate_ids), candidate_attributes, candidate_content
            )
            weights = batch.get(data_lib.EXAMPLE_WEIGHT_KEY)
            loss = self._dense_loss(user_lookups, article_lookups, labels, candidate_ids, log_q, weights)
            scaled = loss * gradient_scale if gradient_scale != 1.0 else loss
        return loss, tape.gradient(scaled, self.model.trainable_variables)

    def eval_recall(
        self, eval_set: EvalSet | validation_set.ReplayValidation, corpus_ids: dict[str, np.ndarray], k: int
    ) -> float:
        """Recall@k of the current weights on `eval_set`, exact search over the corpus."""
        return metrics_lib.recall_at_k(self.eval_ranks(eval_set, corpus_ids), k)

    def eval_ranks(
        self, eval_set: EvalSet | validation_set.ReplayValidation, corpus_ids: dict[str, np.ndarray]
    ) -> np.ndarray:
        """Target ranks (see `metrics.target_ranks`) of the current weights on `eval_set`: the replay
        protocol's (trainer/evaluation/replay.py, as `candidates evaluate`) for a `ReplayValidation`."""
        if isinstance(eval_set, validation_set.ReplayValidation):
            return eval_set.ranks(self.model)
        article_vectors = self.model.article_vectors(
            corpus_ids[model_lib.LABEL_KEY],
            {a: corpus_ids[model_lib.label_attribute_key(a)] for a in self.model.attributes},
            {k: corpus_ids[k] for k in model_lib.CONTENT_KEYS if k in corpus_ids},
        ).numpy()
        parts = []
        for start in range(0, len(eval_set), 4096):
            batch = {
                key: value[start : start + 4096] for key, value in eval_set.features.items() if key != features.USER_ID
            }
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
