"""The TF Transform `preprocessing_fn`: raw training examples -> model features.

The same graph runs in the Beam job (components/transform) and, exported as `transform_fn/`, inside
the serving model, so training and serving features cannot drift apart. Everything is driven by
`homefeed.features`; knobs come from `homefeed.config.TransformConfig`.

Raw inputs (`raw_feature_spec()`), batch size B:
  * `history`, `history_<attr>`: `tf.SparseTensor` string `[B, None]` (VarLen), most recent first,
    parallel to each other;
  * `label`, `label_<attr>`, `user_id`: string `[B]`; `example_age_days`: float32 `[B]`;
  * `label_title`: `tf.SparseTensor` string `[B, <=1]`, the label's normalised title (empty row:
    none); `label_age_days`: float32 `[B]`, the label's age (features.LABEL_AGE);
  * `recent_queries`: `tf.SparseTensor` string `[B, None]` (VarLen), most recent first, NFKC-
    normalised text (homefeed.tokens.normalise; the extract and the serving encoder apply it).

Outputs (`features.transformed_name`):
  * `history_xf`, `history_<attr>_xf`: `tf.SparseTensor` int64 `[B, <=H]`, vocabulary ids, the H
    most recent views, order kept;
  * `label_xf`, `label_<attr>_xf`: int64 `[B]`;
  * `search_tokens_xf`: `tf.SparseTensor` int64 `[B, <=SEARCH_TOKENS_MAX]`: the unigrams and
    bigrams of the `search_length` most recent queries (trainer/model/text_ops.py), as ids of the
    `search_token_vocab` vocabulary (tokens seen at least `search_vocab_frequency_threshold`
    times in training), `search_oov_buckets` hashed ids after it for the rest;
  * `last_query_tokens_xf`: the same for the most recent query alone;
  * `example_age_days_xf`: float32 `[B]`, z-scored with the training split's mean and deviation;
  * `title_tokens_xf`: `tf.SparseTensor` int64 `[B, <=TITLE_TOKENS_MAX]`: the label title's
    unigrams and bigrams (the search queries' splitting, trainer/model/text_ops.py), each hashed into
    `features.TITLE_HASH_BUCKETS` ids (no vocabulary: a brand-new listing's words get ids too);
  * `label_age_bucket_xf`: int64 `[B]`, `features.age_bucket` of `label_age_days` (0 unknown);
  * `user_id`: string `[B]`, passed through unchanged (lets evaluation group examples by user).

Ids: `0 .. vocab_size - 1` for known values, `vocab_size .. vocab_size + num_oov_buckets - 1` for
values unseen in training (hashed), so an unknown article never crashes serving.

Serving calls the exported transform with only `features.SERVING_FEATURES`; outputs that need the
missing raw features (label, user id) are dropped by TFT, the rest are computed exactly as here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TypeAlias

import tensorflow as tf
import tensorflow_transform as tft

from homefeed import features
from homefeed.config import TransformConfig
from trainer.model import text_ops

TensorLike: TypeAlias = tf.Tensor | tf.SparseTensor

# Raw features that are sequences (VarLen) rather than one value per example.
HISTORY_KEYS: tuple[str, ...] = features.HISTORY_COLUMNS
LABEL_KEYS: tuple[str, ...] = features.LABEL_COLUMNS
# Vocabulary name -> (history column, label column) whose values it is built from.
VOCABULARY_SOURCES: dict[str, tuple[str, str]] = {
    features.ARTICLE_VOCAB: (features.HISTORY, features.LABEL),
    **{
        features.vocabulary_name(a): (features.history_attribute(a), features.label_attribute(a))
        for a in features.ARTICLE_ATTRIBUTES
    },
}


def raw_feature_spec() -> dict[str, tf.io.FixedLenFeature | tf.io.VarLenFeature]:
    """The raw (pre-transform) feature spec the Beam job feeds: VarLen histories, scalar rest.

    Histories are `VarLenFeature` (SparseTensor), not ragged: TFT vocabularies accept sparse input,
    ragged input has an open bug.
    """
    spec: dict[str, tf.io.FixedLenFeature | tf.io.VarLenFeature] = {
        key: tf.io.VarLenFeature(tf.string) for key in HISTORY_KEYS
    }
    spec.update({key: tf.io.FixedLenFeature([], tf.string) for key in LABEL_KEYS})
    spec[features.USER_ID] = tf.io.FixedLenFeature([], tf.string)
    spec[features.EXAMPLE_AGE] = tf.io.FixedLenFeature([], tf.float32)
    spec[features.RECENT_QUERIES] = tf.io.VarLenFeature(tf.string)
    spec[features.LABEL_TITLE] = tf.io.VarLenFeature(tf.string)
    spec[features.LABEL_AGE] = tf.io.FixedLenFeature([], tf.float32)
    return spec


def truncate_history(history: tf.SparseTensor, length: int) -> tf.SparseTensor:
    """Keeps the first `length` entries of each row of a 2-D `SparseTensor` (the most recent views).

    Args:
      history: `[B, W]` with canonically ordered indices (as parsed or built by `tf.sparse.from_dense`).
      length: H, the number of entries kept per row.

    Returns:
      `[B, min(W, H)]`, same dtype; entries keep their positions, so order is preserved.
    """
    kept = tf.sparse.retain(history, history.indices[:, 1] < length)
    width = tf.minimum(history.dense_shape[1], tf.constant(length, tf.int64))
    return tf.SparseTensor(kept.indices, kept.values, tf.stack([history.dense_shape[0], width]))


def _shared_vocabulary(
    history: tf.SparseTensor,
    label: tf.Tensor,
    name: str,
    top_k: int | None,
    frequency_threshold: int | None,
) -> tf.Tensor:
    """One vocabulary over the history values and the labels together (so both share ids).

    Returns the deferred vocabulary file name (a string tensor filled in by the analysis).
    """
    values = tf.concat([history.values, tf.reshape(label, [-1])], axis=0)
    return tft.vocabulary(
        values,
        top_k=top_k,
        frequency_threshold=frequency_threshold,
        vocab_filename=name,
        # Unit weights give the same counts, ordering and threshold as plain frequency, but make
        # TFT count each batch's unique values in TensorFlow: without weights it sends every single
        # token to Beam as its own element (TFT's TODO b/112916494), which dominated the job's time.
        weights=tf.ones_like(values, dtype=tf.float32),
        name=name,
    )


def transform(inputs: Mapping[str, TensorLike], config: TransformConfig) -> dict[str, TensorLike]:
    """The preprocessing for `config`; see the module docstring for inputs and outputs.

    Attributes (`features.ARTICLE_ATTRIBUTES`) whose columns are absent from `inputs` are skipped.
    """
    outputs: dict[str, TensorLike] = {}
    for vocab_name, (history_key, label_key) in VOCABULARY_SOURCES.items():
        if history_key not in inputs or label_key not in inputs:
            continue
        history = truncate_history(inputs[history_key], config.history_length)
        is_article = vocab_name == features.ARTICLE_VOCAB
        # Frequency threshold and size cap apply to article ids; categories and regions are few.
        vocabulary = _shared_vocabulary(
            history,
            inputs[label_key],
            vocab_name,
            top_k=config.vocab_top_k if is_article else None,
            # TFT warns that a threshold of 1 is a no-op; None says the same without the noise.
            frequency_threshold=(
                config.vocab_frequency_threshold if is_article and config.vocab_frequency_threshold > 1 else None
            ),
        )
        apply = functools.partial(
            tft.apply_vocabulary,
            deferred_vocab_filename_tensor=vocabulary,
            num_oov_buckets=config.num_oov_buckets,
        )
        outputs[features.transformed_name(history_key)] = apply(history)
        outputs[features.transformed_name(label_key)] = apply(inputs[label_key])

    if features.RECENT_QUERIES in inputs:
        outputs.update(search_token_ids(inputs[features.RECENT_QUERIES], config))
    outputs[features.transformed_name(features.EXAMPLE_AGE)] = tft.scale_to_z_score(
        tf.cast(inputs[features.EXAMPLE_AGE], tf.float32), name="example_age_z_score"
    )
    if features.LABEL_TITLE in inputs:
        outputs[features.transformed_name(features.TITLE_TOKENS)] = title_token_ids(inputs[features.LABEL_TITLE])
    if features.LABEL_AGE in inputs:
        outputs[features.transformed_name(features.AGE_BUCKET)] = age_buckets(inputs[features.LABEL_AGE])
    if features.USER_ID in inputs:
        outputs[features.USER_ID] = tf.identity(inputs[features.USER_ID])
    return outputs


def title_token_ids(titles: tf.SparseTensor) -> tf.SparseTensor:
    """`label_title [B, <=1]` (normalised text) -> hashed unigram and bigram ids, int64
    `[B, <=TITLE_TOKENS_MAX]` (see module docstring)."""
    tokens = truncate_history(text_ops.query_tokens(titles), features.TITLE_TOKENS_MAX)
    ids = tf.strings.to_hash_bucket_fast(tokens.values, features.TITLE_HASH_BUCKETS)
    return tf.SparseTensor(tokens.indices, ids, tokens.dense_shape)


def age_buckets(age_days: tf.Tensor) -> tf.Tensor:
    """`features.age_bucket` as TensorFlow ops: float `[B]` days -> int64 `[B]` buckets."""
    days = tf.cast(age_days, tf.float64)
    known = days >= 0.0  # False for negative and NaN ages: unknown, bucket 0
    hours = tf.where(known, days, tf.zeros_like(days)) * 24.0
    bucket = 1 + tf.cast(tf.floor(tf.math.log(1.0 + hours) / tf.math.log(tf.constant(2.0, tf.float64))), tf.int64)
    return tf.where(known, tf.minimum(bucket, features.AGE_BUCKETS - 1), tf.zeros_like(bucket))


def search_token_ids(queries: tf.SparseTensor, config: TransformConfig) -> dict[str, tf.SparseTensor]:
    """`recent_queries [B, Q]` -> `search_tokens_xf` and `last_query_tokens_xf` (the first query's
    tokens only), int64 `[B, <=SEARCH_TOKENS_MAX]`, ids of one vocabulary (see module docstring).

    Without any query in training the vocabulary holds only TFT's placeholder token, and every
    row is empty: the model then has no search part (trainer/training/data.py).
    """
    recent = truncate_history(queries, config.search_length)
    tokens = truncate_history(text_ops.query_tokens(recent), features.SEARCH_TOKENS_MAX)
    vocabulary = tft.vocabulary(
        tokens.values,
        frequency_threshold=config.search_vocab_frequency_threshold
        if config.search_vocab_frequency_threshold > 1
        else None,
        vocab_filename=features.SEARCH_TOKEN_VOCAB,
        weights=tf.ones_like(tokens.values, dtype=tf.float32),  # see _shared_vocabulary
        name=features.SEARCH_TOKEN_VOCAB,
    )
    last = truncate_history(text_ops.query_tokens(truncate_history(queries, 1)), features.SEARCH_TOKENS_MAX)
    return {
        features.transformed_name(key): tft.apply_vocabulary(
            value, vocabulary, num_oov_buckets=config.search_oov_buckets
        )
        for key, value in ((features.SEARCH_TOKENS, tokens), (features.LAST_QUERY_TOKENS, last))
    }


def make_preprocessing_fn(
    config: TransformConfig | None = None,
) -> Callable[[Mapping[str, TensorLike]], dict[str, TensorLike]]:
    """A `preprocessing_fn(inputs) -> outputs` bound to `config` (defaults if None), for TFT."""
    bound = config or TransformConfig()

    def preprocessing_fn(inputs: Mapping[str, TensorLike]) -> dict[str, TensorLike]:
        return transform(inputs, bound)

    return preprocessing_fn


def preprocessing_fn(inputs: Mapping[str, TensorLike]) -> dict[str, TensorLike]:
    """TFX-style module entry point with the default `TransformConfig`."""
    return transform(inputs, TransformConfig())
