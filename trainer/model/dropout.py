"""Keras dropout with the random algorithm named (Philox), so that XLA draws its masks quickly.

Keras's dropout calls TensorFlow's stateless dropout without naming an algorithm. Uncompiled, that
is Philox; compiled with XLA (trainer/training/dense_step.py) it becomes ThreeFry, which XLA on a CPU
generates ~30x slower when the seed is a variable, as a Keras seed generator's is (59 vs 1.8 ms
for a [512, 256] mask): more than the whole rest of the step. Naming Philox changes nothing
uncompiled: the masks are bit-for-bit Keras's (tests/trainer/test_train_speed.py).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras.src.backend.tensorflow.random import _cast_seed, _get_concrete_noise_shape, draw_seed  # Keras's own (pinned)

RNG_ALGORITHM = "philox"


class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout` (same arguments, same masks uncompiled) drawing with Philox."""

    def call(self, inputs, training=False):
        if not training or self.rate <= 0:
            return inputs
        return tf.nn.experimental.stateless_dropout(
            inputs,
            rate=self.rate,
            noise_shape=_get_concrete_noise_shape(inputs, self.noise_shape),
            seed=_cast_seed(draw_seed(self.seed_generator)),
            rng_alg=RNG_ALGORITHM,
        )
