"""trainer/evaluation/replay.py: the one ranking of validation and test views.

`rank_views` is checked against the per-view reference (`served_corpus.ranks_over_time`) on a
corpus whose listings come and go, `seen_before` against the seen sets worked out by hand, and the
training loop's validation against `candidates evaluate`'s path on the same views.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from homefeed import features
from trainer.evaluation import metrics as metrics_lib
from trainer.evaluation import replay
from trainer.evaluation import served_corpus as served_lib

DAY_MS = served_lib.MS_PER_DAY


def _corpus(rng: np.random.Generator, n: int, exported: int) -> served_lib.ServedCorpus:
    ids = pd.Index([f"a{i:02d}" for i in range(n)])
    created = rng.uniform(0, 8, n) * DAY_MS
    created[rng.random(n) < 0.1] = np.nan  # unknown age: bucket 0
    lifetime = np.where(rng.random(n) < 0.5, rng.uniform(0.5, 4, n) * DAY_MS, np.inf)
    live_from = np.where(np.isnan(created), -np.inf, created)
    frame = pd.DataFrame(
        {
            features.ARTICLE_ID: ids,
            features.TITLE: [""] * n,
            features.CREATED_AT: pd.NaT,
            "category": "c",
            "region": "r",
        }
    )
    live_to = np.where(np.isnan(created), np.inf, np.nan_to_num(created) + lifetime)
    live_to[:exported] = np.inf  # the exported rows are the as_of corpus: still up at as_of
    return served_lib.ServedCorpus(ids, frame, created, live_from, live_to, exported, True)


def _embed(table: np.ndarray, direction: np.ndarray):
    """Integer vectors (exact float32 products, so ties are exact): a row per id plus the age
    bucket along `direction`, as the article tower reads the id and the age bucket."""

    def embed(raw) -> np.ndarray:
        rows = np.array([int(i[1:]) for i in raw[features.LABEL]])
        buckets = served_lib.age_buckets(np.asarray(raw[features.LABEL_AGE], np.float64))
        return (table[rows] + buckets[:, None] * direction[None, :]).astype(np.float32)

    return embed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_views_equals_the_per_view_reference(seed):
    rng = np.random.default_rng(seed)
    n, d, views = 60, 4, 80
    corpus = _corpus(rng, n, exported=45)
    times = rng.uniform(2, 9, views) * DAY_MS
    times[rng.random(views) < 0.1] = np.nan  # ranked at as_of over the exported rows
    table = rng.integers(-2, 3, size=(n, d)).astype(np.float32)
    vectors = served_lib.ServedVectors(corpus, times, _embed(table, rng.integers(-1, 2, d)), 9.5 * DAY_MS)
    users = rng.integers(-2, 3, size=(views, d)).astype(np.float32)
    targets = rng.integers(-1, n, views)
    exclude = [rng.choice(n, size=rng.integers(0, 6), replace=False) for _ in range(views)]

    got = replay.rank_views(corpus, vectors, users, times, targets, exclude)
    expected = served_lib.ranks_over_time(
        corpus, times, targets, exclude, lambda i, rows, t: vectors.at(rows, t) @ users[i]
    )
    np.testing.assert_array_equal(got, expected)
    assert (got != metrics_lib.MISSED).sum() > views // 4  # not a vacuous comparison
    assert (got == metrics_lib.MISSED).sum() > 0

    # The as_of corpus's fixed vectors (a model that cannot embed new listings): its rows only.
    m = corpus.num_exported
    exported = served_lib.ServedCorpus(
        corpus.article_ids[:m],
        corpus.frame.iloc[:m],
        corpus.created_ms[:m],
        corpus.live_from_ms[:m],
        corpus.live_to_ms[:m],
        m,
        True,
    )
    fixed = table[:m]
    targets = np.where(targets < m, targets, -1)
    got = replay.rank_views(exported, fixed, users, times, targets, exclude)
    expected = served_lib.ranks_over_time(
        exported, times, targets, [e[e < m] for e in exclude], lambda i, rows, t: fixed[rows] @ users[i]
    )
    np.testing.assert_array_equal(got, expected)


def _examples(rows: list[tuple]) -> pa.Table:
    """(user, label, history most recent first, viewed_at, split) rows."""
    users, labels, histories, times, splits = zip(*rows)
    return pa.table(
        {
            features.USER_ID: pa.array(users, pa.string()),
            features.LABEL: pa.array(labels, pa.string()),
            features.HISTORY: pa.array(histories, pa.list_(pa.string())),
            features.VIEWED_AT: pa.array(pd.to_datetime(list(times), utc=True), pa.timestamp("us", tz="UTC")),
            features.SPLIT: pa.array(splits, pa.string()),
        }
    )


# u1 views a0 (first: only in a history), a1, a2, a1 again, a3 (validation), a4 and a5 (test);
# u2's views never enter u1's seen set.
EXAMPLES = _examples(
    [
        ("u1", "a1", ["a0"], "2024-01-01 10:00", "train"),
        ("u1", "a2", ["a1", "a0"], "2024-01-01 11:00", "train"),
        ("u1", "a1", ["a2", "a1", "a0"], "2024-01-02 10:00", "train"),
        ("u1", "a3", ["a1", "a2", "a1"], "2024-01-03 10:00", "validation"),
        ("u1", "a4", ["a3", "a1", "a2"], "2024-01-04 10:00", "test"),
        ("u1", "a5", ["a4", "a3", "a1"], "2024-01-04 12:00", "test"),
        ("u2", "a6", ["a7"], "2024-01-04 11:00", "test"),
    ]
)


def test_the_seen_set_is_every_view_before_the_view_of_any_split():
    corpus = pd.Index([f"a{i}" for i in range(8)])
    rows = EXAMPLES.to_pandas()
    seen = replay.seen_before(EXAMPLES, rows, corpus)
    as_ids = [sorted(corpus[s]) for s in seen]
    assert as_ids[0] == ["a0"]
    assert as_ids[3] == ["a0", "a1", "a2"]  # the validation view: its train views
    assert as_ids[4] == ["a0", "a1", "a2", "a3"]  # the first test view: the validation view too
    assert as_ids[5] == ["a0", "a1", "a2", "a3", "a4"]  # the second: the earlier test view too
    assert as_ids[6] == ["a7"]
    # Bounded as the service bounds it: the most recently viewed distinct articles (a1 viewed
    # again after a2 counts as recent).
    bounded = replay.seen_before(EXAMPLES, rows, corpus, length=3)
    assert sorted(corpus[bounded[5]]) == ["a1", "a3", "a4"]
    # An article the corpus does not know counts toward the bound but excludes nothing.
    partial = replay.seen_before(EXAMPLES, rows, pd.Index(["a1", "a4"]), length=3)
    assert sorted(pd.Index(["a1", "a4"])[partial[5]]) == ["a1", "a4"]


def test_held_out_views_are_the_same_whatever_the_split_is_called():
    corpus = served_lib.ServedCorpus.build([f"a{i}" for i in range(8)], pd.DataFrame(), EXAMPLES)
    test = replay.held_out_views(EXAMPLES, features.TEST_SPLIT, corpus)
    swapped = EXAMPLES.set_column(
        EXAMPLES.schema.get_field_index(features.SPLIT),
        features.SPLIT,
        pa.array(
            [
                {"test": "validation", "validation": "test"}.get(s, s)
                for s in EXAMPLES.column(features.SPLIT).to_pylist()
            ]
        ),
    )
    validation = replay.held_out_views(swapped, features.VALIDATION_SPLIT, corpus)
    assert len(test) == 3 and test.users == ["u1", "u1", "u2"]
    np.testing.assert_array_equal(test.targets, [4, 5, 6])
    np.testing.assert_array_equal(validation.targets, test.targets)
    np.testing.assert_array_equal(validation.times_ms, test.times_ms)
    for a, b in zip(validation.exclude, test.exclude):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_validation_in_training_and_the_test_evaluation_rank_alike(extract_dir, transform_dir, tmp_path):
    """The extract's test views, given to the training loop as its validation split, get exactly the
    ranks the evaluation's path (the exported SavedModel, trainer/towers/serving_model.py) gives
    them as the test split."""
    import tensorflow as tf
    from trainer_testdata import SMALL_TRAIN_CONFIG, H

    from homefeed.config import TrainConfig
    from homefeed.layout import extract_dir as extract_layout
    from homefeed.layout.model_dir import ARTICLE_SIGNATURE, SAVED_MODEL_DIR, SERVING_SIGNATURE
    from trainer.evaluation import held_out
    from trainer.model import two_tower as model_lib
    from trainer.towers.serving_model import UserEncoder
    from trainer.training import data as data_lib
    from trainer.training.export import ServingModule
    from trainer.training.trainer import Trainer
    from trainer.training.validation_set import ReplayValidation

    data = data_lib.TransformedData.open(transform_dir)
    config = TrainConfig(**SMALL_TRAIN_CONFIG)
    model = model_lib.TwoTowerModel(data.vocab, data.history_length, config)
    model.build_all()
    transform_layer = data.tft_output.transform_features_layer()
    corpus = data.read_corpus()
    as_of_ms = data.as_of_ms(corpus)
    table = held_out.read_examples(extract_dir)
    served = served_lib.ServedCorpus.build(
        corpus[features.ARTICLE_ID].astype(str).tolist(),
        corpus,
        table,
        served_lib.read_listings(extract_dir / extract_layout.LISTINGS_FILE),
    )
    splits = table.column(features.SPLIT).to_pylist()
    swap = {features.TEST_SPLIT: features.VALIDATION_SPLIT, features.VALIDATION_SPLIT: features.TEST_SPLIT}
    swapped = table.set_column(
        table.schema.get_field_index(features.SPLIT), features.SPLIT, pa.array([swap.get(s, s) for s in splits])
    )
    validation = ReplayValidation(
        replay.held_out_views(swapped, features.VALIDATION_SPLIT, served),
        served,
        as_of_ms,
        transform_layer,
        tuple(data.attributes),
        data.history_length,
    )
    trainer = Trainer(model, data_lib.training_statistics(data, set()), config)
    corpus_ids = data_lib.transform_corpus(transform_layer, corpus, data.attributes, as_of_ms)
    validation_ranks = trainer.eval_ranks(validation, corpus_ids)

    module = ServingModule(model, transform_layer, data.attributes)
    tf.saved_model.save(
        module,
        str(tmp_path / "m" / SAVED_MODEL_DIR),
        signatures={SERVING_SIGNATURE: module.serve, ARTICLE_SIGNATURE: module.article_vectors},
    )
    test_views = replay.held_out_views(table, features.TEST_SPLIT, served)
    test_ranks, _ = replay.replay_ranks(UserEncoder(tmp_path / "m", H), test_views, served, as_of_ms)

    assert len(test_ranks) == splits.count(features.TEST_SPLIT)
    assert (test_ranks != metrics_lib.MISSED).sum() > len(test_ranks) // 2
    np.testing.assert_array_equal(validation_ranks, test_ranks)
