"""trainer/model/attention.py: Keras's multi-head attention with Philox dropout and flat projections.

Reference: `keras.layers.MultiHeadAttention` itself, built with the same seeds and weights, called
in training mode several times in a row (so the dropout seed streams are compared too), eager and
compiled with XLA as the training step compiles it, forward and gradients.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.model import attention as attention_lib
from trainer.model import dropout as dropout_lib

QUERY = tf.random.stateless_normal([8, 3, 16], seed=[3, 4])
VALUE = tf.random.stateless_normal([8, 5, 16], seed=[5, 6])


def _pair(dropout: float = 0.5):
    """Ours and Keras's layer, same seeds (hence same weights and dropout seed), built."""
    layers = []
    for cls in (attention_lib.MultiHeadAttention, keras.layers.MultiHeadAttention):
        keras.utils.set_random_seed(7)  # the attention dropout's seed generator draws its seed from it (built)
        layer = cls(
            2,
            8,
            dropout=dropout,
            name="attention",
            kernel_initializer=keras.initializers.GlorotUniform(seed=1),
            bias_initializer=keras.initializers.RandomNormal(seed=2),
        )
        layer(QUERY, VALUE)
        layers.append(layer)
    return layers


def test_attention_equals_keras_attention_with_its_dropout_masks_and_weights():
    ours, reference = _pair()
    assert [w.path for w in ours.weights] == [w.path for w in reference.weights]
    for a, b in zip(ours.weights, reference.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for _ in range(3):  # equal outputs under dropout 0.5 need equal masks, call after call
        got, want = ours(QUERY, VALUE, training=True).numpy(), reference(QUERY, VALUE, training=True).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert type(ours._dropout_layer) is dropout_lib.Dropout
    projections = (ours._query_dense, ours._key_dense, ours._value_dense, ours._output_dense)
    assert all(type(p) is attention_lib.FlatEinsumDense for p in projections)
    assert not np.array_equal(ours(QUERY, VALUE, training=True).numpy(), ours(QUERY, VALUE, training=False).numpy())


@pytest.mark.parametrize("jit_compile", [False, True])
def test_attention_gradients_equal_keras_attention_gradients(jit_compile):
    ours, reference = _pair(dropout=0.0)

    def gradients(layer):
        @tf.function(jit_compile=jit_compile)
        def run(query, value):
            with tf.GradientTape() as tape:
                tape.watch([query, value])
                out = layer(query, value, training=True)
                loss = tf.reduce_sum(out * tf.sin(out))
            return tape.gradient(loss, [query, value] + layer.trainable_variables)

        return run(QUERY, VALUE)

    got, want = gradients(ours), gradients(reference)
    assert len(got) == len(want) == 2 + 8  # inputs, then 4 kernels and 4 biases
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "equation, contracted",
    [
        ("abc,cde->abde", 1),
        ("abcd,cde->abe", 2),
        ("ab,bc->ac", 1),
        ("abc,cd->abd", 1),
        ("abc,dce->abde", None),
        ("abcd,abde->abce", None),
        ("abc,cde->abed", None),
        ("abc,cd->abcd", None),
    ],
)
def test_only_matrix_product_equations_are_flattened(equation, contracted):
    assert attention_lib._flat_contraction(equation) == contracted


@pytest.mark.parametrize(
    "equation, kernel_axes", [("abc,cde->abde", "cde"), ("abc,dce->abde", "dce"), ("abcd,cde->abe", "cde")]
)
def test_a_flat_projection_equals_keras_einsum_dense_whatever_its_equation(equation, kernel_axes):
    sizes = {"a": 4, "b": 3, "c": 5, "d": 2, "e": 6}
    x = tf.random.stateless_normal([sizes[a] for a in equation.split(",")[0]], seed=[1, 1])
    output_shape = [sizes[a] for a in equation.split("->")[1][1:]]
    layers = []
    for cls in (attention_lib.FlatEinsumDense, keras.layers.EinsumDense):
        layer = cls(
            equation,
            output_shape,
            bias_axes="e",
            kernel_initializer=keras.initializers.GlorotUniform(seed=1),
            bias_initializer=keras.initializers.RandomNormal(seed=2),
            activation="relu",
        )
        layers.append(layer(x).numpy())
    assert layers[0].shape == tuple([x.shape[0]] + output_shape)
    np.testing.assert_allclose(layers[0], layers[1], rtol=1e-5, atol=1e-6)
