"""The two towers on hand-made transformed tensors: shapes, masking, OOV articles, losses."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from homefeed.config import USER_POOLINGS, TrainConfig
from trainer.model import loss as loss_lib
from trainer.model import two_tower as model_lib

H = 6
VOCAB = model_lib.VocabularySizes(articles=21, attributes={"category": 5, "region": 3}, known_articles=20)


def _config(**overrides) -> TrainConfig:
    values = dict(embedding_dim=8, attribute_embedding_dim=4, tower_units=(16,), output_dim=8, recent_items=2, seed=1)
    values.update(overrides)
    return TrainConfig(**values)


def _inputs(history: list[list[int]], width: int | None = None, age: float = 0.0) -> dict[str, tf.Tensor]:
    """Right-padded transformed features; attributes derived from the ids."""
    width = width or max(1, max(len(h) for h in history))
    ids = np.full((len(history), width), model_lib.PAD_ID, np.int32)
    for i, h in enumerate(history):
        ids[i, : len(h)] = h
    category = np.where(ids >= 0, ids % 4, model_lib.PAD_ID)
    region = np.where(ids >= 0, ids % 2, model_lib.PAD_ID)
    return {
        model_lib.HISTORY_KEY: tf.constant(ids),
        model_lib.history_attribute_key("category"): tf.constant(category),
        model_lib.history_attribute_key("region"): tf.constant(region),
        model_lib.AGE_KEY: tf.fill([len(history)], age),
    }


@pytest.fixture(scope="module", params=USER_POOLINGS)
def model(request) -> model_lib.TwoTowerModel:
    m = model_lib.TwoTowerModel(VOCAB, H, _config(user_pooling=request.param, attention_window=4))
    m.build_all()
    return m


def test_user_and_article_vectors_have_dimension_d_and_unit_norm(model):
    users = model.user_vectors(_inputs([[1, 2, 3], [4]]))
    articles = model.article_vectors(
        tf.constant([0, 5, 20]), {"category": tf.constant([0, 1, 4]), "region": tf.constant([0, 1, 2])}
    )
    assert users.shape == (2, 8) and articles.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(users, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(articles, axis=1), 1.0, rtol=1e-5)


def test_padding_never_changes_a_user_vector(model):
    histories = [[3, 1, 4], [5], [9, 2, 6, 5]]
    narrow = model.user_vectors(_inputs(histories)).numpy()
    for width in (4, H, H + 5):  # wider than H: the extra columns are padding too
        wide = model.user_vectors(_inputs(histories, width=width)).numpy()
        np.testing.assert_array_equal(wide, narrow)


def test_a_row_does_not_depend_on_the_other_rows_of_its_batch(model):
    alone = model.user_vectors(_inputs([[3, 1, 4]])).numpy()
    together = model.user_vectors(_inputs([[3, 1, 4], [7, 7, 7, 7, 7, 7]])).numpy()
    # float32 sums reduce in batch-dependent blocks: ~2e-7 apart is rounding, a real dependence is far larger
    np.testing.assert_allclose(together[:1], alone, rtol=1e-5, atol=1e-6)


def test_history_beyond_h_is_ignored_and_order_matters(model):
    base = model.user_vectors(_inputs([[1, 2, 3, 4, 5, 6]])).numpy()
    longer = model.user_vectors(_inputs([[1, 2, 3, 4, 5, 6, 11, 12]])).numpy()
    np.testing.assert_array_equal(base, longer)
    # recent_items=2: swapping the most recent view with an old one changes the vector.
    swapped = model.user_vectors(_inputs([[6, 2, 3, 4, 5, 1]])).numpy()
    assert not np.allclose(base, swapped)


def test_empty_history_gives_a_finite_vector(model):
    empty = model.user_vectors(_inputs([[]], width=1)).numpy()
    zero_width = model.user_vectors(
        {key: (tf.zeros([1, 0], tf.int32) if value.shape.rank == 2 else value) for key, value in _inputs([[]]).items()}
    ).numpy()
    assert np.isfinite(empty).all()
    np.testing.assert_array_equal(empty, zero_width)


def test_unknown_article_vector_comes_from_its_attributes(model):
    oov = VOCAB.articles - 1
    cats = model.article_vectors(
        tf.constant([oov, oov]), {"category": tf.constant([0, 3]), "region": tf.constant([0, 0])}
    ).numpy()
    assert np.isfinite(cats).all()
    assert not np.allclose(cats[0], cats[1])
    # Ids beyond the table (more OOV buckets than expected) are clipped, never a crash.
    far = model.article_vectors(tf.constant([10_000]), {"category": tf.constant([99]), "region": tf.constant([0])})
    assert np.isfinite(far.numpy()).all()


def test_without_attributes_the_model_uses_ids_only():
    vocab = model_lib.VocabularySizes(articles=11, known_articles=10)
    m = model_lib.TwoTowerModel(vocab, 4, _config(share_embeddings=False, l2_normalize=False, dropout=0.0))
    m.build_all()
    users = m.user_vectors({model_lib.HISTORY_KEY: tf.constant([[1, 2, -1]]), model_lib.AGE_KEY: tf.constant([0.5])})
    articles = m.article_vectors(tf.constant([1, 2]), {})
    assert users.shape == (1, 8) and articles.shape == (2, 8)


def test_shared_embeddings_are_one_variable():
    shared = model_lib.TwoTowerModel(VOCAB, H, _config(share_embeddings=True))
    separate = model_lib.TwoTowerModel(VOCAB, H, _config(share_embeddings=False))
    shared.build_all()
    separate.build_all()
    # Separate towers have 3 more tables (history ids, history category, history region).
    assert len(separate.trainable_variables) == len(shared.trainable_variables) + 3
    assert len({id(v) for v in shared.trainable_variables}) == len(shared.trainable_variables)


def test_dropout_only_in_training(model):
    m = model_lib.TwoTowerModel(VOCAB, H, _config(dropout=0.5))
    m.build_all()
    inputs = _inputs([[1, 2, 3]])
    np.testing.assert_array_equal(m.user_vectors(inputs).numpy(), m.user_vectors(inputs).numpy())
    assert not np.allclose(m.user_vectors(inputs, training=True).numpy(), m.user_vectors(inputs).numpy())


# --- loss ---------------------------------------------------------------------------------------
def _softmax_ce(logits: np.ndarray) -> float:
    logits = logits - logits.max(axis=1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-np.mean(np.diag(log_softmax)))


def test_loss_matches_a_hand_computation_with_logq_and_accidental_hits():
    rng = np.random.default_rng(0)
    users = rng.normal(size=(3, 4)).astype(np.float32)
    candidates = rng.normal(size=(5, 4)).astype(np.float32)
    labels = np.array([7, 8, 7])  # users 0 and 2 share a label: an accidental hit each
    candidate_ids = np.array([7, 8, 7, 9, 8])  # two sampled extras; id 8 again is a hit for user 1
    log_q = np.log(np.array([0.5, 0.2, 0.5, 0.1, 0.2], np.float32))
    temperature = 0.5
    expected_logits = users @ candidates.T / temperature - log_q[None, :]
    for i in range(3):
        for j in range(5):
            if j != i and candidate_ids[j] == labels[i]:
                expected_logits[i, j] = -1e9
    got = loss_lib.retrieval_loss(
        tf.constant(users),
        tf.constant(candidates),
        tf.constant(labels),
        tf.constant(candidate_ids),
        temperature=temperature,
        candidate_log_q=tf.constant(log_q),
    )
    assert float(got) == pytest.approx(_softmax_ce(expected_logits), rel=1e-5)
    no_removal = loss_lib.retrieval_loss(
        tf.constant(users),
        tf.constant(candidates),
        tf.constant(labels),
        tf.constant(candidate_ids),
        temperature=temperature,
        candidate_log_q=tf.constant(log_q),
        remove_accidental_hits=False,
    )
    plain = users @ candidates.T / temperature - log_q[None, :]
    assert float(no_removal) == pytest.approx(_softmax_ce(plain), rel=1e-5)


def test_log_expected_counts_mixes_in_batch_and_uniform_sampling():
    probabilities = np.array([0.5, 0.25, 0.25, 0.0], np.float32)
    log_p = tf.constant(np.log(np.maximum(probabilities, 1e-12)))
    got = loss_lib.log_expected_counts(tf.constant([0, 1, 3]), log_p, batch_size=4, num_sampled=8, num_sampleable=4)
    expected = np.log(4 * probabilities[[0, 1, 3]] + 8 / 4)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_loss_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="vector sizes differ"):
        loss_lib.retrieval_loss(tf.zeros([2, 4]), tf.zeros([3, 5]), tf.constant([0, 1]), tf.constant([0, 1, 2]), 0.1)


SEARCH_VOCAB = model_lib.VocabularySizes(
    articles=21, attributes={"category": 5, "region": 3}, known_articles=20, search_tokens=12
)


def _with_search(inputs: dict[str, tf.Tensor], tokens: list[list[int]], width: int | None = None) -> dict:
    width = width or max(1, max(len(t) for t in tokens))
    ids = np.full((len(tokens), width), model_lib.PAD_ID, np.int32)
    for i, t in enumerate(tokens):
        ids[i, : len(t)] = t
    return {**inputs, model_lib.SEARCH_KEY: tf.constant(ids), model_lib.LAST_QUERY_KEY: tf.constant(ids)}


def test_without_searches_the_model_is_the_one_from_before():
    """search_tokens=0 adds no weights, and the same seed gives bit-identical vectors."""
    plain = model_lib.TwoTowerModel(VOCAB, H, _config())
    plain.build_all()
    assert plain.search_embedding is None
    assert not any("search" in w.path for w in plain.weights)
    with_key = _with_search(_inputs([[1, 2]]), [[3]])  # an unused input changes nothing
    np.testing.assert_array_equal(plain.user_vectors(with_key), plain.user_vectors(_inputs([[1, 2]])))


def test_search_part_is_a_masked_mean_of_token_embeddings():
    m = model_lib.TwoTowerModel(SEARCH_VOCAB, H, _config())
    m.build_all()
    base = _inputs([[1, 2], [], []])
    narrow = m.user_vectors(_with_search(base, [[3, 4], [3, 4], []])).numpy()
    wide = m.user_vectors(
        _with_search(base, [[3, 4], [3, 4], []], width=model_lib.features.SEARCH_TOKENS_MAX + 7)
    ).numpy()
    np.testing.assert_array_equal(narrow, wide)  # padding changes nothing
    # Order does not matter (a mean), but the tokens do: a user with no views is told apart by them.
    swapped = m.user_vectors(_with_search(base, [[4, 3], [4, 3], []])).numpy()
    np.testing.assert_allclose(swapped, narrow, rtol=1e-6, atol=1e-6)
    assert not np.allclose(narrow[1], narrow[2], atol=1e-4)
    other = m.user_vectors(_with_search(base, [[3, 4], [7, 8], []])).numpy()
    assert not np.allclose(other[1], narrow[1], atol=1e-4)
    # The search input reads the embedding's masked mean (checked with numpy on the table).
    table = m.search_embedding.embeddings.numpy()
    np.testing.assert_allclose(
        model_lib.masked_mean(tf.constant(table[[[3, 4, 0]]]), tf.constant([[True, True, False]])).numpy()[0],
        table[[3, 4]].mean(axis=0),
        rtol=1e-6,
    )
    assert np.isfinite(m.user_vectors(_with_search(_inputs([[]]), [[]])).numpy()).all()


def test_search_only_share_hides_views_in_training_only():
    m = model_lib.TwoTowerModel(SEARCH_VOCAB, H, _config(dropout=0.0, search_only_share=0.9999))
    m.build_all()
    rows = _with_search(_inputs([[1, 2, 3], [4]]), [[3, 4], [5]])
    blank = _with_search(_inputs([[], []]), [[3, 4], [5]])
    np.testing.assert_allclose(m.user_vectors(rows, training=True), m.user_vectors(blank), rtol=1e-5, atol=1e-6)
    assert not np.allclose(m.user_vectors(rows), m.user_vectors(blank), atol=1e-4)  # serving sees the views
