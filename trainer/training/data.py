"""Reading a TRANSFORM_DIR (docs/architecture.md) for training: records, vocabularies, corpus.

`TransformedData.open(dir)` checks the directory and gathers what training needs to know about it;
`training_dataset` streams shuffled batches of dense tensors; `iterate_split` reads a split as
numpy batches; `training_statistics` makes one pass over the training split for label frequencies (logQ
correction, popularity), article attributes (for sampled negatives) and the articles each chosen
user has seen; `transform_corpus` runs the corpus through the TFT graph, exactly as serving will.

Dense batches hold `history_xf`, `history_<attr>_xf` int32 `[B, H]` right-padded with
`model.PAD_ID`, `label_xf`, `label_<attr>_xf` int32 `[B]`, `example_age_days_xf` float32 `[B]` and,
where the transform passed it through, `user_id` string `[B]`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from homefeed import features
from homefeed.config import TransformConfig
from homefeed.layout import extract_dir as extract_layout
from homefeed.layout import transform_dir as transform_layout
from trainer.model import two_tower as model_lib

LOG = logging.getLogger(__name__)

# TRANSFORM_DIR's names, from their owner.
SUCCESS_MARKER = transform_layout.SUCCESS_MARKER
SUMMARY_FILE = transform_layout.SUMMARY_FILE
CORPUS_FILE = transform_layout.CORPUS_FILE
RECORD_PATTERN = transform_layout.EXAMPLES_PATTERN
STATISTICS_BATCH = 8192
CACHE_FILL_BATCH = 4096  # records a step of training_dataset's cache fill reads
EXAMPLE_WEIGHT_KEY = "example_weight"  # training batches with per-user caps (training_dataset)


@dataclass
class TransformedData:
    """What the trainer needs to know about a TRANSFORM_DIR.

    Attributes:
      path: the directory.
      tft_output: `tft.TFTransformOutput` over it (the transform graph and vocabularies).
      vocab: embedding sizes (vocabulary + OOV buckets) of articles and attributes.
      history_length: H the transform cut histories to.
      num_oov_buckets: OOV buckets per vocabulary.
      files: split name -> TFRecord files.
      feature_spec: the transformed feature spec (for `tf.io.parse_example`).
      summary: `transform_summary.json` as written by the transform (empty if absent).
    """

    path: Path
    tft_output: Any
    vocab: model_lib.VocabularySizes
    history_length: int
    num_oov_buckets: int
    files: dict[str, list[str]]
    feature_spec: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(self.vocab.attributes)

    @classmethod
    def open(cls, path: str | os.PathLike) -> TransformedData:
        """Checks `path` is a finished transform output and reads its facts.

        Raises:
          FileNotFoundError: no such directory, no `_SUCCESS`, no train records, no corpus.
          ValueError: the transformed schema lacks a feature the model needs.
        """
        import tensorflow_transform as tft  # heavy; only needed once a directory is really opened

        path = Path(path)
        files = transform_layout.check_transform_dir(path)
        summary_path = path / SUMMARY_FILE
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        tft_output = tft.TFTransformOutput(str(path))
        spec = dict(tft_output.transformed_feature_spec())
        required = (model_lib.HISTORY_KEY, model_lib.LABEL_KEY, model_lib.AGE_KEY)
        missing = [key for key in required if key not in spec]
        if missing:
            raise ValueError(f"{path}: transformed features {missing} are missing (has {sorted(spec)})")
        attributes = tuple(
            a
            for a in features.ARTICLE_ATTRIBUTES
            if model_lib.history_attribute_key(a) in spec and model_lib.label_attribute_key(a) in spec
        )
        config = summary.get("config", {})
        num_oov = int(summary.get("num_oov_buckets", config.get("num_oov_buckets", 1)))
        if "num_oov_buckets" not in summary and "num_oov_buckets" not in config:
            LOG.warning("%s does not record num_oov_buckets; assuming 1", summary_path)
        history_length = int(config.get("history_length", features.HISTORY_LENGTH))
        known = tft_output.vocabulary_size_by_name(features.ARTICLE_VOCAB)
        search_tokens = 0
        if model_lib.SEARCH_KEY in spec:
            known_tokens = search_vocabulary_size(tft_output)
            if known_tokens:
                search_oov = int(config.get("search_oov_buckets", TransformConfig().search_oov_buckets))
                search_tokens = known_tokens + search_oov
        content = {
            "title_buckets": features.TITLE_HASH_BUCKETS if model_lib.TITLE_KEY in spec else 0,
            "age_buckets": features.AGE_BUCKETS if model_lib.AGE_BUCKET_KEY in spec else 0,
        }
        vocab = model_lib.VocabularySizes(
            **content,
            articles=known + num_oov,
            attributes={
                a: tft_output.vocabulary_size_by_name(features.vocabulary_name(a)) + num_oov for a in attributes
            },
            known_articles=known,
            search_tokens=search_tokens,
        )
        return cls(path, tft_output, vocab, history_length, num_oov, files, spec, summary)

    def vocabulary_hash(self) -> str:
        """sha256 over every vocabulary file (name and content), in a fixed order.

        Two models with the same hash map every raw id to the same embedding row.
        """
        digest = hashlib.sha256()
        names = [features.ARTICLE_VOCAB, *(features.vocabulary_name(a) for a in self.attributes)]
        if self.vocab.search_tokens:  # absent: the hash of a model without searches, unchanged
            names.append(features.SEARCH_TOKEN_VOCAB)
        for name in names:
            digest.update(name.encode() + b"\0")
            digest.update(tf.io.gfile.GFile(self.tft_output.vocabulary_file_by_name(name), "rb").read())
            digest.update(b"\0")
        digest.update(f"oov={self.num_oov_buckets}".encode())
        return digest.hexdigest()

    def as_of_ms(self, corpus: pd.DataFrame) -> float:
        """When the data was cut (the extract's as_of, read through the transform summary's
        `examples_dir`), the `now` corpus ages are measured at; see article_inputs.corpus_now_ms."""
        from trainer.towers import article_inputs

        as_of = None
        examples_dir = self.summary.get("examples_dir")
        try:
            if examples_dir and tf.io.gfile.exists(os.path.join(examples_dir, extract_layout.SUMMARY_FILE)):
                text = tf.io.gfile.GFile(os.path.join(examples_dir, extract_layout.SUMMARY_FILE)).read()
                as_of = json.loads(text).get("as_of")
        except (OSError, ValueError, tf.errors.OpError):
            LOG.warning(
                "could not read the extract's as_of under %s; using the corpus's newest created_at", examples_dir
            )
        return article_inputs.corpus_now_ms(corpus, as_of)

    def article_vocabulary(self) -> list[str]:
        """The article vocabulary: id `i` is `article_vocabulary()[i]`."""
        return [
            v.decode() if isinstance(v, bytes) else v
            for v in self.tft_output.vocabulary_by_name(features.ARTICLE_VOCAB)
        ]

    def read_corpus(self) -> pd.DataFrame:
        """`corpus/articles.parquet`: one row per candidate article (`features.CORPUS_COLUMNS`)."""
        corpus = pd.read_parquet(self.path / CORPUS_FILE)
        if features.ARTICLE_ID not in corpus.columns:
            raise ValueError(f"{self.path / CORPUS_FILE} has no article_id column")
        corpus = corpus[corpus[features.ARTICLE_ID].notna()].drop_duplicates(features.ARTICLE_ID).reset_index(drop=True)
        corpus[features.ARTICLE_ID] = corpus[features.ARTICLE_ID].astype(str)
        if corpus.empty:
            raise ValueError(f"{self.path / CORPUS_FILE} holds no articles: there is nothing to recommend")
        return corpus


def search_vocabulary_size(tft_output: Any) -> int:
    """Known search tokens in a transform output; 0 when training had no queries (TFT then writes
    a single placeholder token into the empty vocabulary)."""
    from tensorflow_transform import analyzers

    size = int(tft_output.vocabulary_size_by_name(features.SEARCH_TOKEN_VOCAB))
    if size == 1:
        dummy = analyzers.get_empy_vocabulary_dummy_value(tf.string)[1]
        if tft_output.vocabulary_by_name(features.SEARCH_TOKEN_VOCAB)[0] == dummy:
            return 0
    return size


def dense_features(parsed: Mapping[str, Any], history_length: int) -> dict[str, tf.Tensor]:
    """Parsed transformed features -> the dense batch the model takes (see module docstring)."""
    out: dict[str, tf.Tensor] = {}
    for key, value in parsed.items():
        if isinstance(value, tf.SparseTensor):
            width = (
                features.SEARCH_TOKENS_MAX
                if key in model_lib.SEARCH_KEYS
                else features.TITLE_TOKENS_MAX
                if key == model_lib.TITLE_KEY
                else history_length
            )
            dense = tf.sparse.to_dense(value, default_value=model_lib.PAD_ID)[:, :width]
            # Always exactly W wide: fixed shapes (one trace of the training step) and batches concatenate.
            missing = width - tf.shape(dense)[1]
            dense = tf.pad(dense, [[0, 0], [0, missing]], constant_values=model_lib.PAD_ID)
            out[key] = tf.cast(dense, tf.int32)
        elif value.dtype == tf.int64:
            out[key] = tf.cast(value, tf.int32)
        else:
            out[key] = value
    return out


def _records(files: Sequence[str]) -> tf.data.Dataset:
    return tf.data.TFRecordDataset(list(files), compression_type="GZIP")


def training_dataset(
    data: TransformedData,
    batch_size: int,
    shuffle_buffer: int,
    seed: int,
    cache: bool = True,
    splits: Sequence[str] = (features.TRAIN_SPLIT,),
    user_weights: Mapping[str, float] | None = None,
    repeat: bool = False,
    shard: tuple[int, int] = (1, 0),
) -> tf.data.Dataset:
    """Shuffled (reshuffled each epoch, seeded) batches of dense training features of `splits`.

    With `repeat` the batches go on without end, pass after pass, each pass reshuffled (an epoch
    takes `num_examples // batch_size` of them: `epochs.fit`); the end of a pass then never reaches
    the parsing stage. Iterated to its end during training, a pass stalled 27-30 s in its last
    `next()` in about half the epochs at 10^6 (idle, after the last batch; not with an idle
    consumer; tf.data's cause not found; training_issue16.jsonl `epoch-end-stall`).

    The last partial batch is dropped: in-batch negatives need full batches. With `user_weights`
    (user id -> weight of each of their examples; absent users weigh 1) each batch also holds
    `EXAMPLE_WEIGHT_KEY` float32 `[B]`. With `cache` the serialized records are read into memory
    before this returns, and every epoch reads them from there.

    `shard` `(n, i)`: only every n-th record from the i-th on (one worker's share in data-parallel
    training, trainer/training/distributed.py), taken before the cache so a worker keeps only its own.
    """
    spec = {k: v for k, v in data.feature_spec.items() if k != features.USER_ID or user_weights}
    dataset = _records([f for split in splits for f in data.files[split]])
    if shard != (1, 0):
        dataset = dataset.shard(*shard)
    if cache:
        dataset = dataset.cache()
        # Filled now, a batch of records at a time (~2.5 s at 10^6). Filled by the first epoch
        # instead, the decompression ran on the batch stage's thread, starved for CPU by the step's,
        # and the step waited for it: a first epoch of 85 s for 48 s later.
        for _ in dataset.batch(CACHE_FILL_BATCH):
            pass
    dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.map(
        lambda serialized: dense_features(tf.io.parse_example(serialized, spec), data.history_length),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if user_weights:
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(user_weights), tf.string), tf.constant(list(user_weights.values()), tf.float32)
            ),
            default_value=1.0,
        )

        def weigh(batch):
            batch = dict(batch)
            batch[EXAMPLE_WEIGHT_KEY] = table.lookup(batch.pop(features.USER_ID))
            return batch

        dataset = dataset.map(weigh, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def capped_user_weights(counts: Mapping[str, int], cap: int) -> dict[str, float]:
    """`cap / n` for each user with `n > cap` training examples (the others weigh 1 and are left
    out): every user's examples then count at most `cap` in the loss."""
    return {user: cap / n for user, n in counts.items() if cap and n > cap}


def iterate_split(
    data: TransformedData, split: str, batch_size: int = STATISTICS_BATCH
) -> Iterator[dict[str, np.ndarray]]:
    """Batches of one split in file order, as numpy dicts (dense, see module docstring)."""
    dataset = _records(data.files[split]).batch(batch_size)
    dataset = dataset.map(lambda s: dense_features(tf.io.parse_example(s, data.feature_spec), data.history_length))
    yield from dataset.as_numpy_iterator()


@dataclass
class TrainingStatistics:
    """Facts from one pass over the training split.

    Attributes:
      num_examples: training examples.
      label_counts: int64 `[vocab.articles]`, how often each article id is a label.
      article_attributes: attr -> int32 `[vocab.articles]`, the attribute id of each article id
        (as last seen in the data; OOV ids hold the last OOV article's value).
      seen: user id -> int32 array of the article ids the user viewed in the training split
        (labels and history), only for the users asked for.
    """

    num_examples: int
    label_counts: np.ndarray
    article_attributes: dict[str, np.ndarray]
    seen: dict[str, np.ndarray]
    # Content of each article id as last seen as a label (sampled negatives): title token ids
    # `[vocab.articles, TITLE_TOKENS_MAX]` (PAD_ID-padded) and age buckets `[vocab.articles]`.
    article_content: dict[str, np.ndarray] = field(default_factory=dict)
    examples_per_user: dict[str, int] = field(default_factory=dict)


def training_statistics(
    data: TransformedData, users: set[str] | None = None, splits: Sequence[str] = (features.TRAIN_SPLIT,)
) -> TrainingStatistics:
    """One pass over `splits` (see `TrainingStatistics`); `users`: whose views to collect."""
    size = data.vocab.articles
    counts = np.zeros(size, np.int64)
    attributes = {a: np.zeros(size, np.int32) for a in data.attributes}
    seen_parts: dict[str, list[np.ndarray]] = {}
    users = users or set()
    content: dict[str, np.ndarray] = {}
    if data.vocab.title_buckets:
        content[model_lib.TITLE_KEY] = np.full((size, features.TITLE_TOKENS_MAX), model_lib.PAD_ID, np.int32)
    if data.vocab.age_buckets:
        content[model_lib.AGE_BUCKET_KEY] = np.zeros(size, np.int32)
    per_user: dict[str, int] = {}
    n = 0
    batches = (batch for split in splits for batch in iterate_split(data, split))
    for batch in batches:
        labels = np.clip(batch[model_lib.LABEL_KEY], 0, size - 1)
        history = batch[model_lib.HISTORY_KEY]
        n += len(labels)
        counts += np.bincount(labels, minlength=size)
        valid = history >= 0
        for attr in data.attributes:
            table = attributes[attr]
            hist_attr = batch[model_lib.history_attribute_key(attr)]
            table[np.clip(history[valid], 0, size - 1)] = hist_attr[valid]
            table[labels] = batch[model_lib.label_attribute_key(attr)]  # labels win: one value per row
        for key, table in content.items():
            table[labels] = batch[key]
        if features.USER_ID in batch:
            ids = [u.decode() if isinstance(u, bytes) else str(u) for u in batch[features.USER_ID]]
            for user in ids:
                per_user[user] = per_user.get(user, 0) + 1
            for i, user in enumerate(ids):
                if user in users:
                    row = history[i]
                    seen_parts.setdefault(user, []).append(np.append(row[row >= 0], labels[i]))
    seen = {u: np.unique(np.concatenate(p)).astype(np.int32) for u, p in seen_parts.items()}
    if n == 0:
        raise ValueError(f"{data.path}: the training split holds no examples")
    return TrainingStatistics(n, counts, attributes, seen, content, per_user)


def transform_corpus(
    transform_layer: Any, corpus: pd.DataFrame, attributes: Sequence[str], now_ms: float, batch_size: int = 8192
) -> dict[str, np.ndarray]:
    """Runs the corpus through the TFT graph as label features -> transformed ids, as serving will.

    Args:
      transform_layer: `tft_output.transform_features_layer()`.
      corpus: `features.CORPUS_COLUMNS` (missing columns are missing values; see
        trainer/towers/article_inputs.py, the one maker of these raw features).
      attributes: the attributes the model uses.
      now_ms: the serving time the ages are measured at.

    Returns:
      `label_xf`, `label_<attr>_xf` int32 `[n]` and, when the transform has them, `title_tokens_xf`
      int32 `[n, TITLE_TOKENS_MAX]` and `label_age_bucket_xf` int32 `[n]`, in corpus row order.
    """
    from trainer.towers import article_inputs

    raw_all = article_inputs.corpus_article_features(corpus, now_ms)
    wanted = (features.LABEL, *(features.label_attribute(a) for a in attributes), *features.LABEL_CONTENT_COLUMNS)
    columns = {key: raw_all[key] for key in wanted}
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(corpus), batch_size):
        raw: dict[str, Any] = {}
        for key, values in columns.items():
            chunk = values[start : start + batch_size]
            if key == features.LABEL_AGE:
                raw[key] = tf.constant(chunk, tf.float32)
            elif key == features.LABEL_TITLE:
                raw[key] = tf.sparse.from_dense(tf.constant(chunk.reshape(-1, 1), tf.string))
            else:
                raw[key] = tf.constant(chunk, tf.string)
        transformed = transform_layer(raw)
        for key in (
            *(
                features.transformed_name(k)
                for k in (features.LABEL, *(features.label_attribute(a) for a in attributes))
            ),
            *(k for k in model_lib.CONTENT_KEYS if k in transformed),
        ):
            value = transformed[key]
            if isinstance(value, tf.SparseTensor):
                value = dense_features({key: value}, 0)[key]
            out.setdefault(key, []).append(np.asarray(value).astype(np.int32))
    return {key: np.concatenate(parts) for key, parts in out.items()}
