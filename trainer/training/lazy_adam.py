"""Lazy Adam: Adam whose update of an embedding table touches only the rows the batch looked up.

A lookup's gradient is a `tf.IndexedSlices` (the looked-up rows and their gradients). Keras 3's
Adam turns it into table-sized dense tensors and then decays the moments of, and moves, every row
of the table, several passes over it per step: at 10^5 articles x 64 that was half a step's CPU
time (benchmarks/training_throughput.py --profile-steps). `LazyAdam` instead sums the gradient of
each distinct row, gathers that row's moments, applies Adam's arithmetic to them and scatters the
rows back. It differs from Keras's Adam in two ways: rows not in the batch keep their value and
their moments (not decayed), as in TF Addons' LazyAdam; and a row looked up several times in one
batch gets the square of its summed gradient in the second moment (Keras squares each lookup's
gradient, then sums). Bias correction uses the global step count, as Keras's Adam does. Dense
gradients (every other weight) and small tables (`min_lazy_rows`) take Keras's update unchanged.
"""

from __future__ import annotations

import keras
import tensorflow as tf

# Smaller tables (categories, regions, age buckets, attention positions: nearly every row is in
# every batch) take the dense update: one scatter-add into a tiny table is cheaper than finding the
# distinct rows of the batch's ~10^4 lookups.
MIN_LAZY_ROWS = 1024


@tf.function(jit_compile=True, autograph=False)
def _sum_by_position(values: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
    """`unsorted_segment_sum(values, positions)` with one output row per input row (a bound XLA
    can compile: the caller keeps the first U). TensorFlow's kernel costs ~80 ns a row at 64
    floats (2.1 CPU-ms a step for the article table's ~26k looked-up rows at B=512, H=50); XLA's
    compiled scatter-add about a third of that (training_issue16.jsonl `segment-sum-xla`)."""
    return tf.math.unsorted_segment_sum(values, positions, tf.shape(values)[0])


def summed_rows(gradient: tf.IndexedSlices) -> tuple[tf.Tensor, tf.Tensor]:
    """`(unique row indices [U], summed gradient rows [U, ...])` of an IndexedSlices gradient."""
    indices, positions = tf.unique(gradient.indices)
    if gradient.values.shape[0] is None:  # a size unknown when traced: one compilation per size; TF's kernel
        return indices, tf.math.unsorted_segment_sum(gradient.values, positions, tf.shape(indices)[0])
    return indices, _sum_by_position(gradient.values, positions)[: tf.shape(indices)[0]]


def _local_component(slot: tf.Variable, variable: tf.Variable) -> tf.Variable:
    """`slot` itself, or under a distribution strategy (trainer/training/distributed.py; the
    optimizer updates each device's copy of `variable`) the copy of the mirrored `slot` on that
    device: a mirrored variable has no row reads or writes of its own."""
    if not isinstance(slot, tf.distribute.DistributedValues):
        return slot
    copies = tf.distribute.get_strategy().experimental_local_results(slot)
    return next((c for c in copies if c.device == variable.device), copies[0])


class LazyAdam(keras.optimizers.Adam):
    """Keras's Adam, except that a sparse (`tf.IndexedSlices`) gradient updates only its rows.

    Takes Keras Adam's arguments, and `min_lazy_rows`: tables with fewer rows take Keras's dense
    update (default MIN_LAZY_ROWS). `amsgrad` is not supported (ValueError).
    """

    def __init__(self, *args, min_lazy_rows: int = MIN_LAZY_ROWS, **kwargs):
        super().__init__(*args, **kwargs)
        self.min_lazy_rows = min_lazy_rows
        if self.amsgrad:
            raise ValueError("LazyAdam does not support amsgrad=True; use keras.optimizers.Adam")

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices) or variable.shape[0] < self.min_lazy_rows:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        alpha = (
            lr
            * tf.sqrt(1 - tf.pow(tf.cast(self.beta_2, dtype), step))
            / (1 - tf.pow(tf.cast(self.beta_1, dtype), step))
        )

        index = self._get_variable_index(variable)
        # The tf.Variables: gathering from a Keras variable would read (copy) the whole table first.
        m = _local_component(self._momentums[index].value, variable)
        v = _local_component(self._velocities[index].value, variable)
        rows, grad = summed_rows(gradient)
        grad = tf.cast(grad, dtype)
        # Keras's Adam's arithmetic, in its order (m += (g - m)(1 - beta_1)), on the batch's rows only.
        m_rows = m.sparse_read(rows)
        m_rows += (grad - m_rows) * (1 - self.beta_1)
        v_rows = v.sparse_read(rows)
        v_rows += (tf.square(grad) - v_rows) * (1 - self.beta_2)
        shape = tf.shape(variable, out_type=rows.dtype)
        m.scatter_update(tf.IndexedSlices(m_rows, rows, shape))
        v.scatter_update(tf.IndexedSlices(v_rows, rows, shape))
        variable.scatter_sub(tf.IndexedSlices(m_rows * alpha / (tf.sqrt(v_rows) + self.epsilon), rows, shape))
