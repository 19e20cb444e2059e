"""trainer/model/text_ops.py (the TensorFlow tokeniser) against homefeed/tokens.py (the plain-Python one)."""

from __future__ import annotations

import pytest

from homefeed import tokens

QUERIES = [
    "Baby  STROLLER!!",
    "유모차 Baby-Stroller",
    "ＡＢＣ\u3000ｘ",
    "ﬁsh cake café",
    "Ёлка, ёлка; ЁЛКА",
    "東京 タワー。ﾃｽﾄ",
    "a\tb\u200bc\u2028d",
    "...",
    "",
    "   ",
    "x" * 40 + " " + " ".join(f"w{i}" for i in range(40)),
    "price: $100 + 10% off",
    "don't stop",
    "emoji 👶 pram",
    "İstanbul straße",
]


def test_reference_words_and_ngrams():
    assert tokens.words("유모차 Baby-Stroller!!") == ["유모차", "baby", "stroller"]
    assert tokens.words("ＡＢＣ\u3000ｘ") == ["abc", "x"]  # full-width folded, ideographic space splits
    assert tokens.words("...") == [] and tokens.words("") == []
    assert tokens.ngrams(["a", "b", "c"]) == ["a", "b", "c", "a b", "b c"]
    assert tokens.query_tokens(["a b", "c"]) == ["a", "b", "a b", "c"]  # no bigram across queries
    assert len(tokens.words(" ".join(["w"] * 100))) == tokens.MAX_TOKENS_PER_QUERY
    assert tokens.normalise(tokens.normalise("ＡＢＣ ﬁ")) == tokens.normalise("ＡＢＣ ﬁ")


@pytest.mark.parametrize("width", [1, 3])
def test_graph_tokens_equal_the_reference(width):
    import tensorflow as tf

    from trainer.model import text_ops

    rows = [QUERIES[i : i + width] for i in range(0, len(QUERIES), width)] + [[]]
    normalised = [[tokens.normalise(q) for q in row] for row in rows]
    dense = [row + [""] * (width - len(row)) for row in normalised]
    got = text_ops.query_tokens(tf.sparse.from_dense(tf.constant(dense, tf.string)))
    got = tf.sparse.to_dense(got, default_value="").numpy().tolist()
    for row, out in zip(normalised, got):
        assert [t.decode() for t in out if t] == tokens.query_tokens(row), row
