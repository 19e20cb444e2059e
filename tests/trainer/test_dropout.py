"""trainer/model/dropout.py: Keras's dropout with Philox named draws Keras's masks, bit for bit.

Reference: `keras.layers.Dropout` itself (the attention's: tests/trainer/test_attention.py), built
with the same seeds, called in training mode (eager and in a tf.function) several times in a row,
so the seed generators' streams are compared too, not only the first mask.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from trainer.model import dropout as dropout_lib


def test_dropout_draws_the_masks_of_keras_dropout_and_is_the_identity_outside_training():
    x = tf.random.stateless_normal([64, 48], seed=[1, 2])
    ours, keras_layer = dropout_lib.Dropout(0.3, seed=5), keras.layers.Dropout(0.3, seed=5)
    compiled_ours, compiled_keras = (
        tf.function(lambda v: ours(v, training=True)),
        tf.function(lambda v: keras_layer(v, training=True)),
    )
    for call_ours, call_keras in [(lambda v: ours(v, training=True), lambda v: keras_layer(v, training=True))] * 2 + [
        (compiled_ours, compiled_keras)
    ] * 2:
        got, want = call_ours(x).numpy(), call_keras(x).numpy()
        np.testing.assert_array_equal(got, want)
        assert 0.2 < (got == 0).mean() < 0.4
    np.testing.assert_array_equal(ours(x, training=False).numpy(), x.numpy())
    noise = dropout_lib.Dropout(0.5, noise_shape=(None, 1), seed=3)(x, training=True).numpy()
    assert (
        set((noise == 0).all(axis=1)) == {True, False} and ((noise == 0).any(axis=1) == (noise == 0).all(axis=1)).all()
    )
