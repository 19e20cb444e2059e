"""Query tokens as TensorFlow ops, for `preprocessing_fn`: the graph twin of `homefeed.tokens`.

The splitting and n-grams here must equal `homefeed.tokens.query_tokens` on normalised text
(tests/transform/test_text_ops.py checks it on Korean, accented, full-width and punctuation-heavy
queries). NFKC itself happens before the graph (see homefeed/tokens.py); lower-casing is repeated
here (UTF-8 aware), which changes nothing on normalised text.
"""

from __future__ import annotations

import tensorflow as tf

from homefeed import tokens


def query_tokens(queries: tf.SparseTensor) -> tf.SparseTensor:
    """Unigram and bigram tokens of each row's queries.

    Args:
      queries: string `[B, Q]`, one row per example, each value one (normalised) query.

    Returns:
      string `[B, T]`: for each row, each query's words then its bigrams (`"w1 w2"`), query by
      query in column order; rows without words are empty.
    """
    batch = tf.shape(queries, out_type=tf.int64)[0]
    text = tf.strings.lower(queries.values, encoding="utf-8")
    text = tf.strings.strip(tf.strings.regex_replace(text, tokens.SEPARATOR_PATTERN, " "))
    words = tf.strings.split(text, sep=" ")  # ragged [N, W]; "" gives [""]
    words = tf.ragged.boolean_mask(words, tf.strings.length(words) > 0)
    words = words[:, : tokens.MAX_TOKENS_PER_QUERY]
    bigrams = tf.strings.ngrams(words, ngram_width=2, separator=" ")
    per_query = tf.concat([words, bigrams], axis=1)  # ragged [N, T_q]
    row_of_query = queries.indices[:, 0]
    # Regroup the queries' tokens by example: row ids of every token, in query order.
    token_rows = tf.repeat(row_of_query, per_query.row_lengths())
    per_row = tf.RaggedTensor.from_value_rowids(per_query.flat_values, token_rows, nrows=batch)
    return per_row.to_sparse()
