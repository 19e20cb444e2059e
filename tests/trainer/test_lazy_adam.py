"""LazyAdam against Adam's arithmetic written out in NumPy: sparse rows lazily, dense weights as Keras."""

from __future__ import annotations

import numpy as np
import pytest

LR, B1, B2, EPS = 0.01, 0.9, 0.999, 1e-7


def _numpy_lazy_adam(table, dense, steps):
    """Reference: per step, the summed gradient of each distinct row updates only that row."""
    table, dense = table.astype(np.float64), dense.astype(np.float64)
    m, v = np.zeros_like(table), np.zeros_like(table)
    dm, dv = np.zeros_like(dense), np.zeros_like(dense)
    for t, (indices, values, dense_grad) in enumerate(steps, start=1):
        alpha = LR * np.sqrt(1 - B2**t) / (1 - B1**t)
        grad = np.zeros_like(table)
        np.add.at(grad, indices, values)
        rows = np.unique(indices)
        m[rows] = B1 * m[rows] + (1 - B1) * grad[rows]
        v[rows] = B2 * v[rows] + (1 - B2) * grad[rows] ** 2
        table[rows] -= alpha * m[rows] / (np.sqrt(v[rows]) + EPS)
        dm = B1 * dm + (1 - B1) * dense_grad  # dense Adam: every element, every step
        dv = B2 * dv + (1 - B2) * dense_grad**2
        dense -= alpha * dm / (np.sqrt(dv) + EPS)
    return table, dense, m, v


@pytest.mark.parametrize("compiled", [False, True, "rows of unknown count"])
def test_sparse_gradients_update_only_their_rows_with_summed_duplicates(compiled):
    """Eager and traced, the duplicates are summed by XLA (`_sum_by_position`); traced without a
    static row count, by TensorFlow's kernel."""
    import keras
    import tensorflow as tf

    from trainer.training.lazy_adam import LazyAdam

    rng = np.random.default_rng(0)
    table0 = rng.normal(size=(50, 4)).astype(np.float32)
    dense0 = rng.normal(size=(3, 4)).astype(np.float32)
    steps = []
    for indices in ([3, 7, 3, 49], [7, 8, 8, 8], [0, 3]):  # duplicates; row 3 skips step 2
        steps.append(
            (
                np.array(indices),
                rng.normal(size=(len(indices), 4)).astype(np.float32),
                rng.normal(size=(3, 4)).astype(np.float32),
            )
        )
    table = keras.Variable(table0, name="table")
    dense = keras.Variable(dense0, name="dense")
    optimizer = LazyAdam(learning_rate=LR, beta_1=B1, beta_2=B2, epsilon=EPS, min_lazy_rows=50)
    optimizer.build([table, dense])

    def apply(indices, values, dense_grad):
        sparse = tf.IndexedSlices(values, indices, tf.constant(table0.shape, tf.int64))
        optimizer.apply_gradients([(sparse, table), (dense_grad, dense)])

    apply_fn = tf.function(apply) if compiled else apply
    if compiled == "rows of unknown count":
        signature = [
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None, 4], tf.float32),
            tf.TensorSpec([3, 4], tf.float32),
        ]
        apply_fn = tf.function(apply, input_signature=signature)
    for indices, values, dense_grad in steps:
        apply_fn(tf.constant(indices), tf.constant(values), tf.constant(dense_grad))

    want_table, want_dense, want_m, want_v = _numpy_lazy_adam(table0, dense0, steps)
    np.testing.assert_allclose(table.numpy(), want_table, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dense.numpy(), want_dense, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(optimizer._momentums[0].numpy(), want_m, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(optimizer._velocities[0].numpy(), want_v, rtol=1e-5, atol=1e-9)
    untouched = np.setdiff1d(np.arange(50), [0, 3, 7, 8, 49])
    np.testing.assert_array_equal(table.numpy()[untouched], table0[untouched])
    assert int(optimizer.iterations) == 3


@pytest.mark.parametrize("sparse", [False, True])
def test_dense_gradients_and_small_tables_give_keras_adam_exactly(sparse):
    import keras
    import tensorflow as tf

    from trainer.training.lazy_adam import MIN_LAZY_ROWS, LazyAdam

    rng = np.random.default_rng(1)
    rows = MIN_LAZY_ROWS - 1
    start = rng.normal(size=(rows, 5)).astype(np.float32)
    if sparse:  # a table just below MIN_LAZY_ROWS, looked up with duplicates
        grads = [
            tf.IndexedSlices(
                tf.constant(rng.normal(size=(8, 5)).astype(np.float32)),
                tf.constant(rng.integers(0, 20, 8)),
                tf.constant([rows, 5], tf.int64),
            )
            for _ in range(3)
        ]
    else:
        grads = [tf.constant(rng.normal(size=(rows, 5)).astype(np.float32)) for _ in range(3)]
    results = []
    for cls in (LazyAdam, keras.optimizers.Adam):
        weight = keras.Variable(start)
        optimizer = cls(learning_rate=LR)
        for grad in grads:
            optimizer.apply_gradients([(grad, weight)])
        results.append(weight.numpy())
    np.testing.assert_array_equal(results[0], results[1])


def test_amsgrad_is_refused():
    from trainer.training.lazy_adam import LazyAdam

    with pytest.raises(ValueError, match="amsgrad"):
        LazyAdam(amsgrad=True)
