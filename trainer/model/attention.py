"""Keras's multi-head attention, with two changes that make its training step cheaper on a CPU.

  * Its attention-probability dropout draws with Philox (`trainer/model/dropout.py`): the same masks
    uncompiled, ~30x faster compiled with XLA.
  * Its four projections (query, key, value, output; Keras `EinsumDense` layers) multiply as one
    2-D matrix product. Keras writes `[B, T, E] x [E, heads, dim]` as a batched matmul with the
    kernel broadcast over B, whose kernel gradient TensorFlow computes as B separate `[E, heads*dim]`
    products and then sums them: for the key and value projections over a 20-view window,
    2 x 512 x 64 x 64 floats written and summed every step, ~6 of a step's ~42 CPU-ms at
    10^6 examples. Flattened to `[B*T, E] x [E, heads*dim]`, the kernel gradient is one matmul.

Same variables, same names, same arithmetic up to float rounding (`tests/trainer/test_attention.py`
against Keras's own layer): checkpoints and exports are unchanged.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from trainer.model import dropout as dropout_lib


def _flat_contraction(equation: str) -> int | None:
    """How many trailing input axes `equation` contracts with the kernel's leading axes, in the
    same order, the output being the input's other axes then the kernel's (a plain matrix product
    once both are flattened); None for any other equation."""
    inputs, output = equation.split("->")
    x, kernel = inputs.split(",")
    contracted = [axis for axis in x if axis in kernel and axis not in output]
    n = len(contracted)
    if n == 0 or x[len(x) - n :] != "".join(contracted) or kernel[:n] != "".join(contracted):
        return None
    return n if output == x[: len(x) - n] + kernel[n:] else None


class FlatEinsumDense(keras.layers.EinsumDense):
    """`keras.layers.EinsumDense` computing a matrix-product equation (`_flat_contraction`) as
    one 2-D matmul; any other equation, LoRA or a quantized kernel: Keras's own call."""

    def call(self, inputs, training=None):
        contracted = _flat_contraction(self.equation)
        if contracted is None or self.lora_enabled or self.quantization_mode is not None:
            return super().call(inputs, training=training)
        kernel = self.kernel
        inner = int(np.prod(kernel.shape[:contracted]))
        flat = tf.matmul(tf.reshape(inputs, [-1, inner]), tf.reshape(kernel, [inner, -1]))
        out_shape = tf.concat([tf.shape(inputs)[: inputs.shape.rank - contracted], kernel.shape[contracted:]], 0)
        x = tf.reshape(flat, out_shape)
        if self.bias is not None:
            x = x + self.bias
        if self.activation is not None:
            x = self.activation(x)
        return x


class MultiHeadAttention(keras.layers.MultiHeadAttention):
    """`keras.layers.MultiHeadAttention` (same arguments and weights) with Philox dropout and flat
    projections (module docstring)."""

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        # The same layer objects, variables and all: only the class (the call) changes.
        for projection in (self._query_dense, self._key_dense, self._value_dense, self._output_dense):
            projection.__class__ = FlatEinsumDense

    def _build_attention(self, rank):
        super()._build_attention(rank)
        # The same layer object, seed generator and all (a new one would draw its own seed: other
        # masks), with `Dropout.call`: it adds no state, so only the class changes.
        self._dropout_layer.__class__ = dropout_lib.Dropout
