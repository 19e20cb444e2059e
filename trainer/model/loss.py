"""Sampled-softmax retrieval loss: in-batch (+ uniformly sampled) negatives with the logQ correction.

The full softmax over the corpus is approximated by scoring each user only against a candidate
set: the batch's own labels (in-batch negatives, drawn in proportion to label frequency) and
optionally `S` articles drawn uniformly from the vocabulary (mixed negative sampling, Yang et al.
2020). Popular articles appear as in-batch negatives far more often than under the true softmax,
so each candidate's logit is reduced by the log of its expected number of occurrences in the
candidate set (Yi et al., RecSys 2019, "sampling-bias-corrected neural modeling"):

    log Q(j) = log(B * p(j) + S / V)

with `p(j)` the label frequency of article j in the training split, B the batch size and V the
number of articles the uniform sampler draws from. A negative that is the example's own label
(an "accidental hit") is masked.
"""

from __future__ import annotations

import tensorflow as tf

MASKED_LOGIT = -1e9


def log_expected_counts(
    candidate_ids: tf.Tensor,
    log_label_probabilities: tf.Tensor,
    batch_size: tf.Tensor | int,
    num_sampled: int,
    num_sampleable: int,
) -> tf.Tensor:
    """`log Q` of each candidate, `[C]` (see the module docstring).

    Args:
      candidate_ids: int `[C]` article ids of the candidates.
      log_label_probabilities: float `[V_all]`, log label frequency of every article id (ids that
        never occur as a label hold a large negative number).
      batch_size: B, the number of in-batch candidates.
      num_sampled: S, uniformly drawn candidates (0: in-batch only).
      num_sampleable: V, the number of ids the uniform sampler draws from.
    """
    batch = tf.cast(batch_size, tf.float32)
    in_batch = batch * tf.exp(tf.gather(log_label_probabilities, candidate_ids))
    uniform = float(num_sampled) / float(max(num_sampleable, 1))
    return tf.math.log(in_batch + uniform + 1e-12)


def retrieval_loss(
    user_vectors: tf.Tensor,
    candidate_vectors: tf.Tensor,
    label_ids: tf.Tensor,
    candidate_ids: tf.Tensor,
    temperature: float,
    candidate_log_q: tf.Tensor | None = None,
    remove_accidental_hits: bool = True,
    example_weights: tf.Tensor | None = None,
) -> tf.Tensor:
    """Mean softmax cross-entropy of each user's label against the candidate set; scalar.

    `example_weights` (float `[B]`, optional): the weighted mean instead (per-user caps).

    Args:
      user_vectors: `[B, d]`.
      candidate_vectors: `[C, d]`, C >= B; the first B rows are the batch's labels, row i being
        user i's positive; the rest are extra (sampled) negatives.
      label_ids: int `[B]`, the users' label article ids.
      candidate_ids: int `[C]`, the candidates' article ids (first B equal to `label_ids`).
      temperature: logits are `u . c / temperature`.
      candidate_log_q: float `[C]`, subtracted from every user's logit of each candidate (logQ
        correction); None: no correction.
      remove_accidental_hits: mask candidates other than user i's own positive whose id equals
        user i's label.

    Raises:
      ValueError: shapes that do not line up (checked when static shapes are known).
    """
    if user_vectors.shape.rank != 2 or candidate_vectors.shape.rank != 2:
        raise ValueError(
            f"user_vectors and candidate_vectors must be [B, d] and [C, d], got "
            f"{user_vectors.shape} and {candidate_vectors.shape}"
        )
    if user_vectors.shape[-1] is not None and candidate_vectors.shape[-1] not in (None, user_vectors.shape[-1]):
        raise ValueError(f"vector sizes differ: users {user_vectors.shape}, candidates {candidate_vectors.shape}")
    batch = tf.shape(user_vectors)[0]
    num_candidates = tf.shape(candidate_vectors)[0]
    logits = tf.matmul(user_vectors, candidate_vectors, transpose_b=True) / temperature
    if candidate_log_q is not None:
        logits -= candidate_log_q[None, :]
    if remove_accidental_hits:
        same = tf.equal(tf.cast(label_ids, tf.int64)[:, None], tf.cast(candidate_ids, tf.int64)[None, :])
        own = tf.pad(tf.eye(batch, dtype=tf.bool), [[0, 0], [0, num_candidates - batch]])
        logits = tf.where(same & ~own, tf.constant(MASKED_LOGIT, logits.dtype), logits)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.range(batch), logits=logits)
    if example_weights is None:
        return tf.reduce_mean(losses)
    weights = tf.cast(example_weights, losses.dtype)
    return tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1e-9)
