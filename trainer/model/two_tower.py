"""The two-tower candidate model (YouTube DNN, Covington et al. 2016) as a Keras 3 model.

User tower: the masked mean of the history's article embeddings, the masked mean of the most
recent `recent_items` of them, an order-aware pooling of the sequence (`user_pooling`: SASRec-style
self-attention with recency positions, or a GRU; trainer/model/sequence.py), the masked means of the
history's attribute embeddings (category and region preferences), the masked mean of the recent
search queries' token embeddings (unigrams and bigrams, Covington et al.'s "search vector"; only when
the transform built a search vocabulary) and the z-scored example age, concatenated and fed through ReLU layers to a user vector of size d.

Article tower: the article id embedding concatenated with the article's attribute embeddings
and, when the transform produced them, the masked mean of its title tokens' embeddings (hashed
unigrams and bigrams) and its age-bucket embedding, fed through one ReLU layer and projected
linearly to size d. An article unseen in training (one of several OOV ids, whose rows training's id
dropout fills) still gets a vector of its own from its title, age, category and region.

Inputs are the *transformed* features (docs/architecture.md, TRANSFORM_DIR) as dense tensors:
history ids are right-padded with `PAD_ID` (-1), which is masked everywhere, so padding never
changes a vector.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import keras
import tensorflow as tf

from homefeed import features
from homefeed.config import TrainConfig
from trainer.model import dropout as dropout_lib
from trainer.model import sequence

LOG = logging.getLogger(__name__)

PAD_ID = -1  # history padding; any negative id is treated as padding
# History attributes whose table has at most this many rows (categories, regions) are pooled as a
# bag: the per-user count of each value times the table (see `user_lookups`).
BAG_MAX_ROWS = 1024

HISTORY_KEY = features.transformed_name(features.HISTORY)
AGE_KEY = features.transformed_name(features.EXAMPLE_AGE)
LABEL_KEY = features.transformed_name(features.LABEL)
SEARCH_KEY = features.transformed_name(features.SEARCH_TOKENS)
LAST_QUERY_KEY = features.transformed_name(features.LAST_QUERY_TOKENS)
SEARCH_KEYS = (SEARCH_KEY, LAST_QUERY_KEY)
TITLE_KEY = features.transformed_name(features.TITLE_TOKENS)
AGE_BUCKET_KEY = features.transformed_name(features.AGE_BUCKET)
CONTENT_KEYS = (TITLE_KEY, AGE_BUCKET_KEY)


def history_attribute_key(attr: str) -> str:
    return features.transformed_name(features.history_attribute(attr))


def label_attribute_key(attr: str) -> str:
    return features.transformed_name(features.label_attribute(attr))


@dataclass(frozen=True)
class VocabularySizes:
    """Embedding table sizes: vocabulary size plus OOV buckets, for article ids and each attribute.

    `attributes` holds the attributes the transform produced (a subset of
    `features.ARTICLE_ATTRIBUTES`, in that order).
    """

    articles: int
    attributes: Mapping[str, int] = field(default_factory=dict)
    # Known (in-vocabulary) article ids are 0 .. known_articles - 1; OOV buckets follow.
    known_articles: int = 0
    # Search token table size (vocabulary + OOV buckets); 0: no search part in the user tower
    # (no searches in training), and the model is exactly the one without this feature.
    search_tokens: int = 0
    # Article content (0: the transform did not produce it, and the tower is without it): hashed
    # title token ids and age buckets.
    title_buckets: int = 0
    age_buckets: int = 0

    @property
    def oov_buckets(self) -> int:
        return self.articles - self.known_articles

    def __post_init__(self) -> None:
        if self.search_tokens < 0:
            raise ValueError(f"search_tokens must be >= 0, got {self.search_tokens}")
        if self.articles < 1 or any(size < 1 for size in self.attributes.values()):
            raise ValueError(f"vocabulary sizes must be >= 1, got {self}")


def masked_mean(embeddings: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean of `embeddings [B, L, E]` over the positions where `mask [B, L]` is true -> `[B, E]`.

    Rows without any valid position give zeros. Masked positions contribute exact zeros to the
    sum, so appending padding leaves the result bit-for-bit unchanged.
    """
    weights = tf.cast(mask, embeddings.dtype)
    total = tf.reduce_sum(embeddings * weights[..., None], axis=1)
    count = tf.reduce_sum(weights, axis=1, keepdims=True)
    return total / tf.maximum(count, 1.0)


class TwoTowerModel(keras.Model):
    """User and article towers; `call` returns user vectors.

    Args:
      vocab: embedding table sizes (see `VocabularySizes`).
      history_length: H; histories are padded or cut to exactly H columns before pooling, so the
        result does not depend on how wide the caller padded (bit-for-bit, not just up to rounding).
      config: model settings (`embedding_dim`, `attribute_embedding_dim`, `tower_units`,
        `output_dim`, `recent_items`, `dropout`, `share_embeddings`, `l2_normalize`, `seed`).
    """

    def __init__(self, vocab: VocabularySizes, history_length: int, config: TrainConfig, **kwargs):
        super().__init__(**kwargs)
        if history_length < 1:
            raise ValueError(f"history_length must be >= 1, got {history_length}")
        self.vocab = vocab
        self.history_length = history_length
        self.config = config
        self.attributes = tuple(vocab.attributes)
        seed = config.seed

        def table(size: int, dim: int, name: str, offset: int) -> keras.layers.Embedding:
            init = keras.initializers.RandomNormal(stddev=0.05, seed=seed + offset)
            layer = keras.layers.Embedding(size, dim, embeddings_initializer=init, name=name)
            layer.build()  # read through `_lookup`, never called: its table is made here
            return layer

        self.article_embedding = table(vocab.articles, config.embedding_dim, "article_embedding", 1)
        self.history_embedding = (
            self.article_embedding
            if config.share_embeddings
            else table(vocab.articles, config.embedding_dim, "history_embedding", 2)
        )
        self.attribute_embeddings = {}
        self.history_attribute_embeddings = {}
        for i, attr in enumerate(self.attributes):
            article_side = table(vocab.attributes[attr], config.attribute_embedding_dim, f"{attr}_embedding", 10 + i)
            self.attribute_embeddings[attr] = article_side
            self.history_attribute_embeddings[attr] = (
                article_side
                if config.share_embeddings
                else table(vocab.attributes[attr], config.attribute_embedding_dim, f"history_{attr}_embedding", 20 + i)
            )
        self.search_embedding = (
            table(vocab.search_tokens, config.embedding_dim, "search_token_embedding", 70)
            if vocab.search_tokens
            else None
        )
        # Training only: hides the views of `search_only_share` of the rows (see user_vectors).
        self._search_only_seed = keras.random.SeedGenerator(seed + 80) if self.search_embedding is not None else None
        tower = []
        for i, units in enumerate(config.tower_units):
            tower.append(
                keras.layers.Dense(
                    units,
                    activation="relu",
                    kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 30 + i),
                    name=f"user_hidden_{i}",
                )
            )
            if config.dropout > 0:
                tower.append(dropout_lib.Dropout(config.dropout, seed=seed + 40 + i, name=f"user_dropout_{i}"))
        tower.append(
            keras.layers.Dense(
                config.output_dim,
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 50),
                name="user_output",
            )
        )
        self.user_layers = tower
        self.sequence_pooling = None
        if config.user_pooling == "attention":
            window = min(config.attention_window or history_length, history_length)
            self.sequence_pooling = sequence.SelfAttentionPooling(
                window,
                config.embedding_dim,
                config.attention_heads,
                config.attention_blocks,
                config.dropout,
                seed + 60,
                name="history_attention",
            )
        elif config.user_pooling == "gru":
            self.sequence_pooling = sequence.GRUPooling(config.embedding_dim, seed + 60, name="history_gru")
        content = config.article_content
        self.title_embedding = (
            table(vocab.title_buckets, config.title_embedding_dim, "title_token_embedding", 90)
            if vocab.title_buckets and content
            else None
        )
        self.age_embedding = (
            table(vocab.age_buckets, config.attribute_embedding_dim, "article_age_embedding", 91)
            if vocab.age_buckets and content
            else None
        )
        self.article_hidden = (
            keras.layers.Dense(
                config.article_units,
                activation="relu",
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 92),
                name="article_hidden",
            )
            if config.article_units
            else None
        )
        self._id_dropout_seed = keras.random.SeedGenerator(seed + 93)
        self.article_projection = keras.layers.Dense(
            config.output_dim,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 51),
            name="article_output",
        )

    # -- towers ----------------------------------------------------------------------------------
    def _ids(self, ids: tf.Tensor, size: int) -> tf.Tensor:
        """Ids made safe for lookup: padding -> 0 (masked later), anything too large -> last OOV id."""
        return tf.clip_by_value(tf.cast(ids, tf.int32), 0, size - 1)

    def _lookup(self, table: keras.layers.Embedding, ids: tf.Tensor) -> tf.Tensor:
        """`table(ids)` after `_ids` (bit-for-bit), gathered from the variable row by row.

        Keras's `Embedding` reads the whole table, then gathers. Once a table has been updated
        sparsely (lazy Adam's scatter, trainer/training/lazy_adam.py) TensorFlow copies it on every whole
        read: 2.4 ms a read of the 10^5 x 64 article table, twice a training step. A gather from
        the variable (`ResourceGather`) reads only the rows; its gradient is the same IndexedSlices.
        """
        return tf.gather(table.embeddings.value, self._ids(ids, table.input_dim))

    def _fixed_width(self, ids: tf.Tensor, width: int | None = None) -> tf.Tensor:
        """`[B, L]` int ids -> `[B, W]` (W = H by default): the first W columns, right-padded with `PAD_ID`."""
        width = width or self.history_length
        ids = tf.cast(ids, tf.int32)[:, :width]
        missing = width - tf.shape(ids)[1]
        return tf.pad(ids, [[0, 0], [0, missing]], constant_values=PAD_ID)

    def user_vectors(self, inputs: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """User vectors `[B, d]`.

        Args:
          inputs: `history_xf` int `[B, L]` (most recent first, right-padded with `PAD_ID`; L may
            be 0; columns beyond H are ignored), `history_<attr>_xf` int `[B, L]` parallel to it (optional: missing attributes
            are left out), `search_tokens_xf` int `[B, T]` (right-padded with `PAD_ID`; used only
            when the model has a search part; columns beyond SEARCH_TOKENS_MAX ignored) and
            `example_age_days_xf` float `[B]` (z-scored).
          training: enables dropout.
        """
        return self.user_from_lookups(self.user_lookups(inputs, training=training), training=training)

    def user_lookups(self, inputs: Mapping[str, tf.Tensor], training: bool = False) -> dict[str, tf.Tensor]:
        """The user tower's first half: every embedding lookup (gather) and mask, at fixed widths.

        Returns the tensors `user_from_lookups` reads: `history` `[B, H, E]` and `mask` `[B, H]`,
        per attribute either `attribute_<attr>_bag` `[B, V]` (the count of each value among the
        real views, when the table has at most BAG_MAX_ROWS rows) or `attribute_<attr>` and
        `attribute_<attr>_mask`, per search key `<key>` and `<key>_mask`, `age` `[B, 1]`. Training
        splits the tower here so that the dense half can be compiled with XLA while the lookups'
        gradients stay sparse (`tf.IndexedSlices`; trainer/training/dense_step.py).
        """
        history = self._fixed_width(inputs[HISTORY_KEY])
        mask = history >= 0
        if training and self._search_only_seed is not None and self.config.search_only_share > 0:
            # Some rows as a user known only by searches would be: every history part sees nothing.
            draw = keras.random.uniform([tf.shape(history)[0], 1], seed=self._search_only_seed)
            mask = mask & (draw >= self.config.search_only_share)
        looked_up = {"history": self._lookup(self.history_embedding, history), "mask": mask}
        for attr in self.attributes:
            values = self._fixed_width(inputs[history_attribute_key(attr)])
            # The history's mask, not the attribute's: the columns are parallel by contract.
            valid = mask & (values >= 0)
            table = self.history_attribute_embeddings[attr]
            if table.input_dim <= BAG_MAX_ROWS:
                # A small table's masked mean is (counts of each value) x table / count. Gathered,
                # its gradient would be ~25k rows summed into a few dozen (1.4 CPU-ms a step per table at
                # B=512, H=50); as a bag it is one small matmul in the dense half.
                ids = self._ids(values, table.input_dim)
                looked_up[f"attribute_{attr}_bag"] = tf.math.bincount(
                    ids,
                    weights=tf.cast(valid, tf.float32),
                    minlength=table.input_dim,
                    maxlength=table.input_dim,
                    axis=-1,
                )
            else:
                looked_up[f"attribute_{attr}"] = self._lookup(table, values)
                looked_up[f"attribute_{attr}_mask"] = valid
        if self.search_embedding is not None:
            # A row without queries (or inputs without the key) gives zeros, like an empty history.
            # Two parts: all recent queries' tokens, and the most recent query's alone.
            for key in SEARCH_KEYS:
                given = inputs.get(key)
                search = self._fixed_width(
                    given if given is not None else tf.fill([tf.shape(history)[0], 1], PAD_ID),
                    features.SEARCH_TOKENS_MAX,
                )
                looked_up[key] = self._lookup(self.search_embedding, search)
                looked_up[f"{key}_mask"] = search >= 0
        looked_up["age"] = tf.reshape(tf.cast(inputs[AGE_KEY], tf.float32), [-1, 1])
        return looked_up

    def user_from_lookups(self, looked_up: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """The user tower's dense half: `user_lookups`'s tensors -> user vectors `[B, d]`."""
        embedded, mask = looked_up["history"], looked_up["mask"]
        parts = [masked_mean(embedded, mask)]
        if self.config.recent_items:
            recent = min(self.config.recent_items, self.history_length)
            parts.append(masked_mean(embedded[:, :recent], mask[:, :recent]))
        if self.sequence_pooling is not None:
            parts.append(self.sequence_pooling(embedded, mask, training=training))
        for attr in self.attributes:
            bag = looked_up.get(f"attribute_{attr}_bag")
            if bag is None:
                parts.append(masked_mean(looked_up[f"attribute_{attr}"], looked_up[f"attribute_{attr}_mask"]))
            else:
                table = self.history_attribute_embeddings[attr].embeddings
                parts.append(tf.matmul(bag, table) / tf.maximum(tf.reduce_sum(bag, axis=1, keepdims=True), 1.0))
        if self.search_embedding is not None:
            for key in SEARCH_KEYS:
                parts.append(masked_mean(looked_up[key], looked_up[f"{key}_mask"]))
        parts.append(looked_up["age"])
        x = tf.concat(parts, axis=1)
        for layer in self.user_layers:
            x = layer(x, training=training) if isinstance(layer, keras.layers.Dropout) else layer(x)
        return tf.math.l2_normalize(x, axis=-1) if self.config.l2_normalize else x

    def drop_ids(self, article_ids: tf.Tensor) -> tf.Tensor:
        """Training only: each id replaced, with probability `config.id_dropout`, by one of the OOV
        ids (`known + id mod oov`), so the OOV rows learn what a listing nobody has seen yet looks
        like from its content, as a new listing will be served."""
        ids = tf.cast(article_ids, tf.int32)
        oov = self.vocab.oov_buckets
        if self.config.id_dropout <= 0 or oov < 1:
            return ids
        draw = keras.random.uniform(tf.shape(ids), seed=self._id_dropout_seed)
        replaced = self.vocab.known_articles + tf.math.floormod(ids, oov)
        return tf.where(draw < self.config.id_dropout, replaced, ids)

    def article_vectors(
        self,
        article_ids: tf.Tensor,
        attributes: Mapping[str, tf.Tensor],
        content: Mapping[str, tf.Tensor] | None = None,
    ) -> tf.Tensor:
        """Article vectors `[N, d]` from ids `[N]`, `attributes[attr]` ids `[N]` and `content`
        (`title_tokens_xf` int `[N, T]` right-padded with `PAD_ID`, `label_age_bucket_xf` int
        `[N]`; transformed). A model with content needs `content`; one without ignores it."""
        return self.article_from_lookups(self.article_lookups(article_ids, attributes, content))

    def article_lookups(
        self,
        article_ids: tf.Tensor,
        attributes: Mapping[str, tf.Tensor],
        content: Mapping[str, tf.Tensor] | None = None,
    ) -> dict[str, tf.Tensor]:
        """The article tower's lookups (arguments as `article_vectors`): `id` `[N, E]`, per
        attribute `attribute_<attr>`, and with content `title` `[N, T, E_t]`, `title_mask` and `age_bucket`."""
        if content is None and (self.title_embedding is not None or self.age_embedding is not None):
            raise ValueError(f"this model reads titles or age buckets: pass `content` ({TITLE_KEY}, {AGE_BUCKET_KEY})")
        content = content or {}
        looked_up = {"id": self._lookup(self.article_embedding, article_ids)}
        for attr in self.attributes:
            looked_up[f"attribute_{attr}"] = self._lookup(self.attribute_embeddings[attr], attributes[attr])
        if self.title_embedding is not None:
            title = self._fixed_width(content[TITLE_KEY], features.TITLE_TOKENS_MAX)
            looked_up["title"] = self._lookup(self.title_embedding, title)
            looked_up["title_mask"] = title >= 0
        if self.age_embedding is not None:
            looked_up["age_bucket"] = self._lookup(self.age_embedding, content[AGE_BUCKET_KEY])
        return looked_up

    def article_from_lookups(self, looked_up: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """The article tower's dense half: `article_lookups`'s tensors -> article vectors `[N, d]`."""
        parts = [looked_up["id"], *(looked_up[f"attribute_{attr}"] for attr in self.attributes)]
        if self.title_embedding is not None:
            parts.append(masked_mean(looked_up["title"], looked_up["title_mask"]))
        if self.age_embedding is not None:
            parts.append(looked_up["age_bucket"])
        x = tf.concat(parts, axis=1)
        if self.article_hidden is not None:
            x = self.article_hidden(x)
        x = self.article_projection(x)
        return tf.math.l2_normalize(x, axis=-1) if self.config.l2_normalize else x

    def call(self, inputs: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        return self.user_vectors(inputs, training=training)

    def build_all(self) -> None:
        """Creates every weight by running both towers once on a dummy batch (before training/export)."""
        dummy = {HISTORY_KEY: tf.fill([1, 1], PAD_ID), AGE_KEY: tf.zeros([1])}
        for attr in self.attributes:
            dummy[history_attribute_key(attr)] = tf.fill([1, 1], PAD_ID)
        if self.search_embedding is not None:
            for key in SEARCH_KEYS:
                dummy[key] = tf.fill([1, 1], PAD_ID)
        self.user_vectors(dummy)
        content = {TITLE_KEY: tf.fill([1, 1], PAD_ID), AGE_BUCKET_KEY: tf.zeros([1], tf.int32)}
        self.article_vectors(tf.zeros([1], tf.int32), {a: tf.zeros([1], tf.int32) for a in self.attributes}, content)
