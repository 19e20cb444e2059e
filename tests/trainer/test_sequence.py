"""Order-aware history pooling (trainer/model/sequence.py): masking, windows, order, empty histories."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer.model import sequence

B, L, E = 3, 8, 8


def _history(lengths: list[int], seed: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
    rng = np.random.default_rng(seed)
    embedded = rng.normal(size=(len(lengths), L, E)).astype(np.float32)
    mask = np.arange(L)[None, :] < np.asarray(lengths)[:, None]
    return tf.constant(embedded), tf.constant(mask)


def _poolings():
    return {
        "attention": sequence.SelfAttentionPooling(L, E, heads=2, blocks=2, dropout=0.0, seed=1),
        "window": sequence.SelfAttentionPooling(3, E, heads=1, blocks=1, dropout=0.0, seed=1),
        "gru": sequence.GRUPooling(E, seed=1),
    }


@pytest.mark.parametrize("name", ["attention", "window", "gru"])
def test_padding_content_never_matters_and_an_empty_history_gives_zeros(name):
    pool = _poolings()[name]
    embedded, mask = _history([5, 1, 0])
    noisy = tf.where(mask[..., None], embedded, 1e3 * tf.ones_like(embedded))  # garbage under the padding
    a = pool(embedded, mask).numpy()
    b = pool(noisy, mask).numpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[2], np.zeros(a.shape[1], np.float32))
    assert np.isfinite(a).all() and np.abs(a[:2]).sum(axis=1).min() > 0


@pytest.mark.parametrize("name", ["attention", "gru"])
def test_order_of_the_views_matters(name):
    """Unlike a mean: the same views in another order give another vector."""
    pool = _poolings()[name]
    embedded, mask = _history([6])
    swapped = tf.concat([embedded[:, 3:4], embedded[:, 1:3], embedded[:, 0:1], embedded[:, 4:]], axis=1)
    assert not np.allclose(pool(embedded, mask).numpy(), pool(swapped, mask).numpy(), atol=1e-5)


def test_the_attention_window_reads_only_the_most_recent_views():
    pool = _poolings()["window"]  # window of 3
    embedded, mask = _history([6])
    changed_old = tf.concat([embedded[:, :3], -embedded[:, 3:]], axis=1)  # views 4.. are outside the window
    np.testing.assert_array_equal(pool(embedded, mask).numpy(), pool(changed_old, mask).numpy())
    changed_recent = tf.concat([-embedded[:, :1], embedded[:, 1:]], axis=1)
    assert not np.allclose(pool(embedded, mask).numpy(), pool(changed_recent, mask).numpy())


def test_gru_reads_the_most_recent_view_last():
    """The final GRU state depends most on the last step read: the most recent view (column 0)."""
    pool = _poolings()["gru"]
    embedded, mask = _history([6])
    base = pool(embedded, mask).numpy()
    recent = pool(tf.concat([embedded[:, :1] * 0, embedded[:, 1:]], axis=1), mask).numpy()
    oldest = pool(tf.concat([embedded[:, :5], embedded[:, 5:6] * 0, embedded[:, 6:]], axis=1), mask).numpy()
    assert np.abs(recent - base).sum() > np.abs(oldest - base).sum()
