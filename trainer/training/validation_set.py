"""The validation examples the training loop scores after each epoch (early stopping, id dropout).

`replay_validation` (the protocol): the extract's VALIDATION views, a seeded sample of at most
`TrainConfig.max_eval_users`, ranked by trainer/evaluation/replay.py, the function `candidates
evaluate` ranks the test views with: each over the corpus live at its time (a listing sold before
as_of or never trained on is ranked by its own vector at its age then, as the service would), the
user's seen set at the view excluded. Only when the extract the transform was built from cannot be
read here does validation fall back to `EvalSet`: the transformed validation rows over the as_of
corpus (a target without a corpus row ranked by its own label vector), the user's training views
and the row's history excluded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from homefeed import config as config_lib
from homefeed import features
from trainer.model import two_tower as model_lib
from trainer.training import data as data_lib

if TYPE_CHECKING:
    from trainer.evaluation import replay as replay_lib
    from trainer.evaluation import served_corpus as served_lib

LOG = logging.getLogger(__name__)


@dataclass
class EvalSet:
    """The validation examples used after each epoch, with targets and exclusions as corpus indices.

    Attributes:
      features: dense transformed eval features (see trainer.training.data), `[n]` rows.
      targets: int `[n]`, corpus index of each label, -1 when the label is not a known corpus article.
      exclude: per row, corpus indices of the user's already-viewed articles.
    """

    features: dict[str, np.ndarray]
    targets: np.ndarray
    exclude: list[np.ndarray]
    own_target: np.ndarray | None = None  # bool [n]: ranked with the row's own label vector (see module docstring)

    def __len__(self) -> int:
        return len(self.targets)


def corpus_index_of_ids(corpus_ids: np.ndarray, known_articles: int) -> np.ndarray:
    """`[vocab]` int array: corpus row of each known article id, -1 when not in the corpus."""
    lookup = np.full(max(known_articles, 1), -1, np.int64)
    rows = np.flatnonzero(corpus_ids < known_articles)
    lookup[corpus_ids[rows]] = rows
    return lookup


def sample_validation_rows(data: data_lib.TransformedData, config: config_lib.TrainConfig) -> dict[str, np.ndarray]:
    """At most `max_eval_users` validation rows, a seeded sample; never the whole split in memory at
    once when the transform summary says how many there are."""
    if not data.files[features.VALIDATION_SPLIT]:
        return {}
    rng = np.random.default_rng(config.seed)
    total = data.summary.get("records_out", {}).get(features.VALIDATION_SPLIT)
    share = 1.0 if not total else min(1.0, 1.2 * config.max_eval_users / total)  # a little extra, trimmed below
    parts: dict[str, list[np.ndarray]] = {}
    for batch in data_lib.iterate_split(data, features.VALIDATION_SPLIT):
        keep = rng.random(len(batch[model_lib.LABEL_KEY])) < share
        for key, value in batch.items():
            parts.setdefault(key, []).append(value[keep])
    if not parts:
        return {}
    rows = {key: np.concatenate(values) for key, values in parts.items()}
    n = len(rows[model_lib.LABEL_KEY])
    if n > config.max_eval_users:
        keep = np.sort(rng.choice(n, config.max_eval_users, replace=False))
        rows = {key: value[keep] for key, value in rows.items()}
    return rows


def decode_strings(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def build_eval_set(
    rows: dict[str, np.ndarray],
    stats: data_lib.TrainingStatistics,
    corpus_lookup: np.ndarray,
    known_articles: int,
) -> EvalSet:
    """Targets and exclusions (training views + the row's history) of the sampled validation rows."""
    labels = rows[model_lib.LABEL_KEY]
    in_vocab = labels < known_articles
    targets = np.where(in_vocab, corpus_lookup[np.minimum(labels, len(corpus_lookup) - 1)], -1)
    users = decode_strings(rows[features.USER_ID]) if features.USER_ID in rows else [None] * len(labels)
    exclude = []
    no_views = np.zeros(0, np.int32)
    for i, user in enumerate(users):
        history = rows[model_lib.HISTORY_KEY][i]
        seen = no_views if user is None else stats.seen.get(user, no_views)
        ids = np.concatenate([history[history >= 0], seen])
        ids = ids[ids < known_articles]  # OOV ids are shared by many articles: never exclude them
        rows_in_corpus = corpus_lookup[ids]
        exclude.append(np.unique(rows_in_corpus[rows_in_corpus >= 0]))
    own = (targets < 0) if model_lib.LABEL_KEY in rows else np.zeros(len(labels), bool)
    return EvalSet(rows, targets.astype(np.int64), exclude, own)


def label_inputs(eval_set: EvalSet, attributes) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """`(ids, attributes, content)` of the rows' own labels, as `TwoTowerModel.article_vectors` takes them."""
    f = eval_set.features
    return (
        f[model_lib.LABEL_KEY],
        {a: f[model_lib.label_attribute_key(a)] for a in attributes},
        {k: f[k] for k in model_lib.CONTENT_KEYS if k in f},
    )


def own_target_ranks(
    user_vectors: np.ndarray, article_vectors: np.ndarray, target_vectors: np.ndarray, eval_set: EvalSet
) -> np.ndarray:
    """Ranks of the `own_target` rows: their label's own vector (`target_vectors`, row i for
    eval_set row i) among the corpus, as one more listing after the corpus's last row (ties rank
    it below), the excluded corpus rows left out. int64 `[n]`, `metrics.MISSED` elsewhere."""
    from trainer.evaluation import metrics as metrics_lib

    ranks = np.full(len(eval_set), metrics_lib.MISSED, np.int64)
    own = np.flatnonzero(eval_set.own_target) if eval_set.own_target is not None else np.zeros(0, np.int64)
    step = max(1, metrics_lib.MAX_SCORES_IN_MEMORY // max(len(article_vectors), 1))
    for start in range(0, len(own), step):
        chosen = own[start : start + step]
        scores = user_vectors[chosen] @ article_vectors.T
        mine = np.einsum("nd,nd->n", user_vectors[chosen], target_vectors[chosen])[:, None]
        beats = scores >= mine
        for j, row in enumerate(chosen):
            excluded = eval_set.exclude[row]
            excluded = excluded[(excluded >= 0) & (excluded < len(article_vectors))]
            ranks[row] = int(beats[j].sum()) - int(beats[j, excluded].sum())
    return ranks


@tf.function(jit_compile=True, reduce_retracing=True)
def _counts(users, articles, targets, excluded):
    """`target_ranks`' compiled batch. Per row: the corpus articles ranked above its target (higher
    score, or the same score at a lower corpus index) minus the excluded ones among them; and
    whether the target itself is excluded. `excluded` is padded with -1."""
    scores = tf.matmul(users, articles, transpose_b=True)
    target_scores = tf.gather(scores, targets, batch_dims=1)[:, None]
    below = targets[:, None]
    columns = tf.range(tf.shape(scores)[1])[None, :]
    above = (scores > target_scores) | ((scores == target_scores) & (columns < below))
    excluded_scores = tf.gather(scores, tf.maximum(excluded, 0), batch_dims=1)
    excluded_above = (excluded >= 0) & (
        (excluded_scores > target_scores) | ((excluded_scores == target_scores) & (excluded < below))
    )
    count = tf.reduce_sum(tf.cast(above, tf.int64), 1) - tf.reduce_sum(tf.cast(excluded_above, tf.int64), 1)
    return count, tf.reduce_any(tf.equal(excluded, below), 1)


def target_ranks(
    user_vectors: np.ndarray,
    article_vectors: np.ndarray,
    eval_set: EvalSet,
    batch_size: int = 1024,
    target_vectors: np.ndarray | None = None,
) -> np.ndarray:
    """`metrics.batched_ranks` of the eval set, the same ranks in one compiled pass over each
    batch's scores.

    The reference builds several score-sized temporaries per batch (row copies, four boolean
    matrices) in NumPy. Here one XLA function per batch multiplies, compares every score with the
    target's (read from the same product, so ties are exact ties) and counts, the tie rule (lower
    corpus index first) and the excluded articles (padded per batch) in the same pass: 10^4
    users x 10^5 articles took 2.4-3.1 s in NumPy (OpenBLAS, then two comparisons), 1.3-1.5 s so. The
    product is TensorFlow's, not NumPy's: on real-valued vectors a score within float rounding of
    the target's may fall on the other side than in the reference.

    Args:
      user_vectors: float32 `[n, d]`, row i for `eval_set` row i.
      article_vectors: float32 `[n_articles, d]`, corpus order.
      batch_size: users scored at once (at most `metrics.MAX_SCORES_IN_MEMORY` scores).
      target_vectors: float32 `[n, d]`, each row's own label vector: the `own_target` rows are
        ranked with it (`own_target_ranks`); None: they are misses.

    Returns:
      int64 `[n]`, `metrics.MISSED` where the target is not in the corpus (and has no own vector)
      or is excluded.
    """
    from trainer.evaluation import metrics as metrics_lib

    n_articles = len(article_vectors)
    ranks = np.full(len(eval_set), metrics_lib.MISSED, np.int64)
    rows = np.flatnonzero((eval_set.targets >= 0) & (eval_set.targets < n_articles))
    if len(rows) and n_articles:
        batch_size = max(1, min(batch_size, len(rows), metrics_lib.MAX_SCORES_IN_MEMORY // n_articles))
        articles = tf.convert_to_tensor(article_vectors, tf.float32)  # once, not once per batch
        users = np.ascontiguousarray(user_vectors, np.float32)
        for start in range(0, len(rows), batch_size):
            chosen = rows[start : start + batch_size]
            # The last batch padded to the same number of rows, the exclusions to a power of two
            # per batch: few shapes to compile, and one heavy user widens only their own batch.
            chosen_padded = np.concatenate([chosen, np.repeat(chosen[:1], batch_size - len(chosen))])
            excluded = [eval_set.exclude[row] for row in chosen]
            excluded = [e[(e >= 0) & (e < n_articles)] for e in excluded]
            width = 1 << max(6, int(max(len(e) for e in excluded)).bit_length())
            padded = np.full((batch_size, width), -1, np.int32)
            for i, e in enumerate(excluded):
                padded[i, : len(e)] = e
            count, target_excluded = _counts(
                users[chosen_padded], articles, eval_set.targets[chosen_padded].astype(np.int32), padded
            )
            count, target_excluded = count.numpy()[: len(chosen)], target_excluded.numpy()[: len(chosen)]
            ranks[chosen] = np.where(target_excluded, metrics_lib.MISSED, count)
    if target_vectors is not None and eval_set.own_target is not None and eval_set.own_target.any():
        own = eval_set.own_target
        ranks[own] = own_target_ranks(user_vectors, article_vectors, target_vectors, eval_set)[own]
    return ranks


def serving_age_feature(transform_layer, n: int) -> np.ndarray:
    """The transformed (z-scored) `features.SERVING_EXAMPLE_AGE`, float32 `[n]`: what the service
    feeds every user, so validation recall is the recall of what is served."""
    out = transform_layer({features.EXAMPLE_AGE: tf.constant([features.SERVING_EXAMPLE_AGE], tf.float32)})
    return np.full(n, float(np.asarray(out[model_lib.AGE_KEY])[0]), np.float32)


# ---------------------------------------------------------------------------------------------
# The replay protocol (trainer/evaluation/replay.py): validation ranked as the test split is
# ---------------------------------------------------------------------------------------------
class ModelEncoder:
    """The in-training model behind `replay.Encoder`: raw histories and raw article features through
    the transform and the towers (export.ServingModule, the graph the SavedModel exports), so
    validation scores the current weights exactly as `candidates evaluate` scores the export."""

    def __init__(self, model: model_lib.TwoTowerModel, transform_layer, attributes, history_length: int):
        from trainer.training import export as export_lib

        self.module = export_lib.ServingModule(model, transform_layer, attributes)
        self.history_length = history_length

    def encode_batched(self, rows, batch_size: int = 1024, example_age_days=features.SERVING_EXAMPLE_AGE):
        from homefeed.layout.model_dir import HISTORY_INPUTS, QUERY_INPUTS
        from trainer.towers.serving_model import pad_histories

        ages = np.broadcast_to(np.asarray(example_age_days, np.float32), (len(rows),))
        parts = []
        for start in range(0, len(rows), batch_size):
            padded = pad_histories(rows[start : start + batch_size], self.history_length)
            inputs = [tf.constant(padded[key], tf.string) for key in (*HISTORY_INPUTS, *QUERY_INPUTS)]
            out = self.module.serve(*inputs, tf.constant(ages[start : start + batch_size]))
            parts.append(next(iter(out.values())).numpy())
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def article_vectors(self, raw) -> np.ndarray:
        from homefeed.layout.model_dir import ARTICLE_INPUTS

        n = len(raw[features.LABEL])
        parts = []
        for start in range(0, n, 8192):
            inputs = [
                tf.constant(raw[key][start : start + 8192], tf.float32 if key == features.LABEL_AGE else tf.string)
                for key in ARTICLE_INPUTS
            ]
            parts.append(next(iter(self.module.article_vectors(*inputs).values())).numpy())
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 0), np.float32)


@dataclass
class ReplayValidation:
    """The validation split replayed as `candidates evaluate` replays the test split: a seeded sample
    of at most `TrainConfig.max_eval_users` views, each over the corpus live at its time with the
    user's seen set then (trainer/evaluation/replay.py, the one ranking of both)."""

    views: replay_lib.HeldOutViews
    served: served_lib.ServedCorpus
    as_of_ms: float
    transform_layer: object
    attributes: tuple[str, ...]
    history_length: int
    _encoders: dict = field(default_factory=dict, repr=False)  # id(model) -> ModelEncoder: traced once

    def __len__(self) -> int:
        return len(self.views)

    def ranks(self, model: model_lib.TwoTowerModel) -> np.ndarray:
        """int64 `[n]` target ranks of the model's current weights (`metrics.MISSED`: a miss)."""
        from trainer.evaluation import replay

        if id(model) not in self._encoders:
            self._encoders.clear()  # one model at a time (the id-dropout candidates run in turn)
            self._encoders[id(model)] = ModelEncoder(model, self.transform_layer, self.attributes, self.history_length)
        ranks, _ = replay.replay_ranks(self._encoders[id(model)], self.views, self.served, self.as_of_ms)
        return ranks


def replay_validation(
    data: data_lib.TransformedData,
    corpus,
    transform_layer,
    config: config_lib.TrainConfig,
    as_of_ms: float,
) -> ReplayValidation | None:
    """The validation views of the extract the transform was built from (its summary's
    `examples_dir`), None when that extract cannot be read or holds no validation view."""
    from pathlib import Path

    from homefeed.layout import extract_dir as extract_layout
    from trainer.evaluation import held_out, replay
    from trainer.evaluation import served_corpus as served_lib

    examples_dir = data.summary.get("examples_dir")
    if not examples_dir or not (Path(examples_dir) / extract_layout.TRAINING_EXAMPLES_FILE).exists():
        LOG.warning("the extract %s is not readable here: validation without the replay protocol", examples_dir)
        return None
    examples_dir = Path(examples_dir)
    table = held_out.read_examples(examples_dir)
    ids = corpus[features.ARTICLE_ID].astype(str).tolist()
    served = served_lib.ServedCorpus.build(
        ids, corpus, table, served_lib.read_listings(examples_dir / extract_layout.LISTINGS_FILE)
    )
    views = replay.held_out_views(table, features.VALIDATION_SPLIT, served, config.max_eval_users, config.seed)
    if not len(views):
        return None
    return ReplayValidation(views, served, as_of_ms, transform_layer, tuple(data.attributes), data.history_length)
