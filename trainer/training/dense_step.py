"""The training step's dense part, optionally compiled with XLA (`TrainConfig.xla_dense`).

A step's forward and backward pass is two halves: the embedding lookups (gathers from the tables,
`TwoTowerModel.user_lookups` / `article_lookups`) and everything after them (masked means, the
attention pooling, the towers' dense layers, the loss). The second half is hundreds of small ops
(einsums and their transposes, LayerNorms, masks, concatenations) whose per-op overhead, not
arithmetic, costs most of its time on a CPU; XLA fuses them. The lookups stay outside the compiled
function: compiled, a gather's gradient becomes a dense table-sized scatter, outside it stays a
`tf.IndexedSlices` of the looked-up rows, which lazy Adam updates row by row (trainer/training/lazy_adam.py).

The compiled function computes the same loss as the plain one up to float rounding (fused
arithmetic), but its dropout masks are drawn by XLA's random number kernels, so a trained model
differs from a plain run's as one seed's run differs from another's. Export and serving never use
it: the SavedModel calls `TwoTowerModel.user_vectors`, the same two halves uncompiled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import tensorflow as tf

from homefeed.config import TrainConfig
from trainer.model import loss as loss_lib
from trainer.model import two_tower as model_lib

DenseLoss = Callable[..., tf.Tensor]


def dense_loss(model: model_lib.TwoTowerModel, config: TrainConfig) -> DenseLoss:
    """`f(user_lookups, article_lookups, labels, candidate_ids, log_q, example_weights) -> loss`:
    the retrieval loss from the two towers' lookups (training mode), compiled with XLA when
    `config.xla_dense`. `log_q` and `example_weights` may be None.

    Raises:
      ValueError: `xla_dense` with `user_pooling="gru"` (XLA cannot compile the gradient of the
        GRU's loop: its TensorLists cross the compiled function's boundary).
    """
    if config.xla_dense and config.user_pooling == "gru":
        raise ValueError(
            "TrainConfig.xla_dense does not support user_pooling='gru' (XLA cannot compile the GRU's "
            "gradient); use xla_dense=False or user_pooling 'attention' or 'mean'"
        )

    def loss(
        user_lookups: Mapping[str, tf.Tensor],
        article_lookups: Mapping[str, tf.Tensor],
        labels: tf.Tensor,
        candidate_ids: tf.Tensor,
        log_q: tf.Tensor | None,
        example_weights: tf.Tensor | None,
    ) -> tf.Tensor:
        return loss_lib.retrieval_loss(
            model.user_from_lookups(user_lookups, training=True),
            model.article_from_lookups(article_lookups),
            labels,
            candidate_ids,
            temperature=config.temperature,
            candidate_log_q=log_q,
            remove_accidental_hits=config.remove_accidental_hits,
            example_weights=example_weights,
        )

    # autograph off: no tensor-dependent Python control flow here (and AutoGraph cannot read a closure).
    return tf.function(loss, jit_compile=True, reduce_retracing=True, autograph=False) if config.xla_dense else loss
