"""The NumPy transform pieces against TensorFlow's ops (the independent reference): OOV hashing,
vocabulary tables and query splitting, on unicode, empty, very long and unseen strings."""

from __future__ import annotations

import numpy as np
import pytest

from homefeed import tokens
from trainer.towers import numpy_features as nf

STRINGS = [
    "",
    "a",
    "a000",
    "유모차",
    "유모차 Baby-Stroller",
    "ＡＢＣ lamp",
    "café crème",
    "Ёлка, ёлка",
    "ﬁsh cake",
    "😀 emoji!!",
    "tab\there",
    "zero\u200bwidth",
    "x" * 10_000,
    "é" * 3000,
    "__missing__",
    "never-seen-id",
    " ",
    *(f"id-{i}" for i in range(300)),
]
QUERIES = [
    "유모차 Baby-Stroller",
    "ＡＢＣ lamp",
    "café crème",
    "Ёлка, ёлка",
    "ﬁsh cake",
    "a--b__c d\u200be",
    "x" * 600,
    "😀 emoji!!",
    "   ",
    "one two three " * 20,
    "tab\there",
    "İstanbul",
    "!!!",
    "3.5 inch",
]


@pytest.mark.parametrize("buckets", [1, 8, 16, 1 << 15])
def test_fingerprint_buckets_equal_tensorflows_hash(buckets):
    import tensorflow as tf

    expected = tf.strings.to_hash_bucket_fast(tf.constant(STRINGS), buckets).numpy()
    assert [nf.fingerprint_bucket(s, buckets) for s in STRINGS] == expected.tolist()


def test_vocabulary_equals_the_static_vocabulary_table(tmp_path):
    import tensorflow as tf

    values = ["a000", "유모차", "café", "__missing__", "x" * 500]
    path = tmp_path / "vocab"
    path.write_text("".join(f"{v}\n" for v in values), encoding="utf-8")
    table = tf.lookup.StaticVocabularyTable(
        tf.lookup.TextFileInitializer(
            str(path), tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER
        ),
        num_oov_buckets=8,
    )
    vocabulary = nf.Vocabulary.from_file(path, 8)
    probe = [*values, *STRINGS]
    np.testing.assert_array_equal(vocabulary.ids(probe), table.lookup(tf.constant(probe)).numpy())
    assert nf.Vocabulary(values, 0).lookup("unseen") == nf.PAD_ID  # no OOV buckets: TFT's default -1


def test_query_tokens_equal_the_graph_and_the_python_reference():
    import tensorflow as tf

    from trainer.model import text_ops

    normalised = [tokens.normalise(q) for q in QUERIES]
    for query in normalised:
        assert list(nf.query_tokens(query)) == tokens.ngrams(tokens.words(query)), query
    graph = text_ops.query_tokens(tf.sparse.from_dense(tf.constant([[q] for q in normalised])))
    dense = tf.sparse.to_dense(graph, default_value=b"").numpy()
    for query, row in zip(normalised, dense):
        assert list(nf.query_tokens(query)) == [t.decode() for t in row if t], query
