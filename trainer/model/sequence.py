"""Order-aware pooling of a history's article embeddings for the user tower.

Histories arrive most recent first and right-padded to exactly H columns (`model._fixed_width`),
with a boolean mask of the real views. Both poolings read the sequence in that fixed layout, so a
history gives the same vector however wide the caller padded it, and a history without any view
gives exact zeros.

  * `SelfAttentionPooling`: SASRec-style (Kang & McAuley 2018) over the most recent views (a
    window, `TrainConfig.attention_window`): each view's embedding plus a learned embedding of its
    recency position (0 = most recent), `blocks - 1` full pre-norm transformer
    blocks over the sequence, then a last block whose only query is the most recent view (the
    read-out), so the last block costs one query instead of H.
  * `GRUPooling`: a GRU run from the oldest view to the most recent one (padding skipped through
    the mask); its final state.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from trainer.model import attention as attention_lib
from trainer.model import dropout as dropout_lib


class _Block(keras.layers.Layer):
    """Pre-norm transformer block: x + MHA(LN(x)), then + FFN(LN(.)); queries may be a prefix."""

    def __init__(self, dim: int, heads: int, dropout: float, seed: int, name: str):
        super().__init__(name=name)
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="attention_norm")
        self.attention = attention_lib.MultiHeadAttention(
            heads,
            max(1, dim // heads),
            dropout=dropout,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            name="attention",
        )
        self.ffn_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="ffn_norm")
        self.ffn_in = keras.layers.Dense(
            dim, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1), name="ffn_in"
        )
        self.ffn_out = keras.layers.Dense(
            dim, kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 2), name="ffn_out"
        )
        self.dropout = dropout_lib.Dropout(dropout, seed=seed + 3)

    def call(self, x: tf.Tensor, mask: tf.Tensor, queries: int | None = None, training: bool = False) -> tf.Tensor:
        """`x [B, H, E]`, `mask [B, H]` -> `[B, Q, E]` for the first `queries` positions (all if None)."""
        normed = self.attention_norm(x)
        query = normed if queries is None else normed[:, :queries]
        residual = x if queries is None else x[:, :queries]
        # attention_mask [B, Q, H]: every query may look at every real view (all are before the label).
        attention_mask = tf.broadcast_to(mask[:, None, :], [tf.shape(query)[0], tf.shape(query)[1], tf.shape(x)[1]])
        attended = self.attention(query, normed, attention_mask=attention_mask, training=training)
        h = residual + attended
        update = self.ffn_out(self.ffn_in(self.ffn_norm(h)))
        return h + self.dropout(update, training=training)


class SelfAttentionPooling(keras.layers.Layer):
    """History `[B, H, E]` + mask `[B, H]` -> `[B, E]` (see module docstring).

    Args:
      history_length: the number of most recent positions read (and of position embeddings).
      dim: E, the article embedding size.
      heads, blocks: attention heads per block and number of blocks (>= 1).
      dropout: dropout inside the blocks (training only).
      seed: initialiser seed.
    """

    def __init__(self, history_length: int, dim: int, heads: int, blocks: int, dropout: float, seed: int, **kwargs):
        super().__init__(**kwargs)
        if blocks < 1 or heads < 1:
            raise ValueError(f"heads and blocks must be >= 1, got {heads}, {blocks}")
        self.positions = keras.layers.Embedding(
            history_length,
            dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.05, seed=seed),
            name="position_embedding",
        )
        self.positions.build()  # read whole (`call`), never called: a dense gradient, no row gather
        self.blocks = [_Block(dim, heads, dropout, seed + 10 * (i + 1), name=f"block_{i}") for i in range(blocks)]
        self.output_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="output_norm")
        self.history_length = history_length

    def call(self, embedded: tf.Tensor, mask: tf.Tensor, training: bool = False) -> tf.Tensor:
        """`embedded [B, L, E]`, `mask [B, L]` with L >= `history_length`: only the first (most
        recent) `history_length` positions are read."""
        embedded, mask = embedded[:, : self.history_length], mask[:, : self.history_length]
        weights = tf.cast(mask, embedded.dtype)[..., None]
        x = (embedded + self.positions.embeddings[None]) * weights
        for block in self.blocks[:-1]:
            x = block(x, mask, training=training) * weights
        out = self.blocks[-1](x, mask, queries=1, training=training)[:, 0]
        has_history = tf.cast(tf.reduce_any(mask, axis=1, keepdims=True), out.dtype)
        return self.output_norm(out) * has_history


class GRUPooling(keras.layers.Layer):
    """History `[B, H, E]` (most recent first) + mask `[B, H]` -> the GRU's final state `[B, units]`."""

    def __init__(self, units: int, seed: int, **kwargs):
        super().__init__(**kwargs)
        # go_backwards: the GRU reads position H-1 (oldest, or padding, skipped by the mask) first
        # and the most recent view last.
        self.gru = keras.layers.GRU(
            units,
            go_backwards=True,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            recurrent_initializer=keras.initializers.Orthogonal(seed=seed + 1),
            name="gru",
        )

    def call(self, embedded: tf.Tensor, mask: tf.Tensor, training: bool = False) -> tf.Tensor:
        out = self.gru(embedded, mask=mask, training=training)
        has_history = tf.cast(tf.reduce_any(mask, axis=1, keepdims=True), out.dtype)
        return out * has_history
