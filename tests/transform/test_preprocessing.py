"""trainer.model.preprocessing: the preprocessing_fn on a few in-memory rows (tft_unit), and its helpers."""

from __future__ import annotations

import math
import tempfile

import pytest
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform.beam import tft_unit

from homefeed import features
from homefeed.config import TransformConfig
from trainer.model import preprocessing

XF = features.transformed_name


TITLES = {"u1": "oak desk", "u2": "", "u3": "oak desk, lamp"}
LABEL_AGES = {"u1": 0.01, "u2": features.UNKNOWN_AGE, "u3": 2.0}  # buckets 1 (0.24 h), 0, 6 (48 h)


def _title_ids(title):
    """The reference: homefeed.tokens' unigrams and bigrams, each hashed by TensorFlow's fingerprint."""
    from homefeed import tokens

    words = tokens.query_tokens([title]) if title else []
    return (
        tf.strings.to_hash_bucket_fast(tf.constant(words, tf.string), features.TITLE_HASH_BUCKETS).numpy().tolist()
        if words
        else []
    )


def _row(user, label, lc, lr, history, hc, hr, age, queries=()):
    return {
        features.LABEL_TITLE: [TITLES[user]] if TITLES[user] else [],
        features.LABEL_AGE: LABEL_AGES[user],
        features.RECENT_QUERIES: list(queries),
        features.USER_ID: user,
        features.LABEL: label,
        "label_category": lc,
        "label_region": lr,
        features.HISTORY: history,
        "history_category": hc,
        "history_region": hr,
        features.EXAMPLE_AGE: age,
    }


# With H = 2 the truncated histories are [a, b], [a], [b, a]: counts over history + label are
# a 5, b 2, d 1 (c and e only appear beyond H); categories x 6, y 2 (z beyond H); regions r1 6, r2 2.
ROWS = [
    _row(
        "u1",
        "d",
        "x",
        "r1",
        ["a", "b", "c"],
        ["x", "y", "x"],
        ["r1", "r1", "r2"],
        1.0,
        ["baby stroller", "유모차 baby"],
    ),
    _row("u2", "a", "x", "r1", ["a"], ["x"], ["r1"], 3.0),
    _row("u3", "a", "x", "r2", ["b", "a", "e"], ["y", "x", "z"], ["r2", "r1", "r1"], 5.0, ["baby-stroller!", "lamp"]),
]
# Search tokens (unigrams, then bigrams, query by query): u1 baby stroller "baby stroller" 유모차
# baby "유모차 baby"; u3 baby stroller "baby stroller" lamp. Threshold 2 keeps baby (3), then
# stroller and "baby stroller" (2 each; ties in descending byte order); the rest is OOV (id 3).
Z = math.sqrt(1.5)  # (5 - 3) / std([1, 3, 5])


def _metadata():
    return tft.DatasetMetadata.from_feature_spec(preprocessing.raw_feature_spec())


@pytest.mark.slow
class PreprocessingFnTest(tft_unit.TransformTestCase):
    test_session = None  # tf.test.TestCase helper that pytest would collect and skip as "Not a test"

    def test_shared_vocabulary_truncation_and_z_score(self):
        expected = [
            {
                XF("history"): [0, 1],
                XF("history_category"): [0, 1],
                XF("history_region"): [0, 0],
                XF("label"): 2,
                XF("label_category"): 0,
                XF("label_region"): 0,
                XF("example_age_days"): -Z,
                "user_id": b"u1",
                XF("search_tokens"): [0, 1, 2, 3, 0, 3],
                XF("last_query_tokens"): [0, 1, 2],
                XF("title_tokens"): _title_ids(TITLES["u1"]),
                XF("label_age_bucket"): 1,
            },
            {
                XF("history"): [0],
                XF("history_category"): [0],
                XF("history_region"): [0],
                XF("label"): 0,
                XF("label_category"): 0,
                XF("label_region"): 0,
                XF("example_age_days"): 0.0,
                "user_id": b"u2",
                XF("search_tokens"): [],
                XF("last_query_tokens"): [],
                XF("title_tokens"): [],
                XF("label_age_bucket"): 0,
            },
            {
                XF("history"): [1, 0],
                XF("history_category"): [1, 0],
                XF("history_region"): [1, 0],
                XF("label"): 0,
                XF("label_category"): 0,
                XF("label_region"): 1,
                XF("example_age_days"): Z,
                "user_id": b"u3",
                XF("search_tokens"): [0, 1, 2, 3],
                XF("last_query_tokens"): [0, 1, 2],
                XF("title_tokens"): _title_ids(TITLES["u3"]),
                XF("label_age_bucket"): 6,
            },
        ]
        self.assertAnalyzeAndTransformResults(
            ROWS,
            _metadata(),
            preprocessing.make_preprocessing_fn(TransformConfig(history_length=2, search_oov_buckets=1)),
            expected_data=expected,
            expected_vocab_file_contents={
                features.SEARCH_TOKEN_VOCAB: [b"baby", b"stroller", b"baby stroller"],
                features.ARTICLE_VOCAB: [b"a", b"b", b"d"],
                "category_vocab": [b"x", b"y"],
                "region_vocab": [b"r1", b"r2"],
            },
        )

    def test_frequency_threshold_and_oov_buckets(self):
        """Threshold 3 keeps only `a`; everything else (seen or not) hashes into the 3 OOV ids."""
        temp_dir = tempfile.mkdtemp(dir=self.get_temp_dir())
        config = TransformConfig(history_length=2, vocab_frequency_threshold=3, num_oov_buckets=3)
        self.assertAnalyzeAndTransformResults(
            ROWS,
            _metadata(),
            preprocessing.make_preprocessing_fn(config),
            expected_vocab_file_contents={
                features.ARTICLE_VOCAB: [b"a"],
                # the threshold is for article ids only: the rare category y stays
                "category_vocab": [b"x", b"y"],
            },
            temp_dir=temp_dir,
        )
        output = tft.TFTransformOutput(temp_dir)
        got = output.transform_features_layer()(
            {features.HISTORY: tf.sparse.from_dense(tf.constant([["b", "never-seen", "a"], ["a", "", ""]]))}
        )
        assert set(got) == {XF("history")}, "only the outputs of the given features come back"
        history = got[XF("history")]
        ids = tf.sparse.to_dense(history, default_value=-1).numpy().tolist()
        assert ids[1] == [0, -1]  # padding dropped, H = 2 kept
        assert ids[0][0] in (1, 2, 3) and ids[0][1] in (1, 2, 3)

    def test_top_k_caps_the_article_vocabulary(self):
        self.assertAnalyzeAndTransformResults(
            ROWS,
            _metadata(),
            preprocessing.make_preprocessing_fn(TransformConfig(history_length=2, vocab_top_k=2)),
            expected_vocab_file_contents={features.ARTICLE_VOCAB: [b"a", b"b"]},
        )


def test_truncate_history_keeps_the_most_recent_in_order():
    dense = tf.constant([["a", "b", "c"], ["d", "", ""], ["", "", ""]])
    truncated = preprocessing.truncate_history(tf.sparse.from_dense(dense), 2)
    assert truncated.dense_shape.numpy().tolist() == [3, 2]
    assert tf.sparse.to_dense(truncated, default_value="-").numpy().tolist() == [
        [b"a", b"b"],
        [b"d", b"-"],
        [b"-", b"-"],
    ]
    # shorter than H: shape follows the data
    short = preprocessing.truncate_history(tf.sparse.from_dense(dense[:, :1]), 5)
    assert short.dense_shape.numpy().tolist() == [3, 1]


def test_raw_feature_spec_is_sparse_histories_and_scalars():
    spec = preprocessing.raw_feature_spec()
    for key in preprocessing.HISTORY_KEYS:
        assert spec[key] == tf.io.VarLenFeature(tf.string)
    assert spec[features.LABEL] == tf.io.FixedLenFeature([], tf.string)
    assert spec[features.EXAMPLE_AGE] == tf.io.FixedLenFeature([], tf.float32)
    assert set(features.SERVING_FEATURES) <= set(spec)


@pytest.mark.parametrize(
    "days", [-1.0, float("nan"), 0.0, 1 / 24 - 1e-9, 1 / 24, 3 / 24, 7 / 24, 0.5, 1.0, 10.0, 365.0, 1e6]
)
def test_age_buckets_equal_the_reference(days):
    got = preprocessing.age_buckets(tf.constant([days], tf.float32)).numpy().tolist()
    assert got == [features.age_bucket(float(tf.constant(days, tf.float32).numpy()))]


def test_title_tokens_are_the_query_splitting_hashed():
    titles = tf.sparse.from_dense(tf.constant([["oak desk, lamp"], [""], ["유모차 baby-stroller"]]))
    ids = preprocessing.title_token_ids(titles)
    dense = tf.sparse.to_dense(ids, default_value=-1).numpy().tolist()
    for row, title in zip(dense, ["oak desk, lamp", "", "유모차 baby-stroller"]):
        assert [i for i in row if i >= 0] == _title_ids(title)
    assert ids.dense_shape.numpy()[1] <= features.TITLE_TOKENS_MAX
