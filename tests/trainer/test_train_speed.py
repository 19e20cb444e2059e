"""What the training loop does for speed, and what that changes in what it computes.

Reference: Keras's own Adam, applied uncompiled. `fused_adam` (its update compiled with XLA) gives
its weights up to rounding; `lazy_adam` (opt-in) gives its first step on the rows looked up
once and leaves the rows a batch did not look up where they are (its arithmetic is checked
against NumPy in test_lazy_adam.py). One real transform run is shared with the other trainer
tests (conftest.py). Per-epoch validation ranks: `metrics.batched_ranks`, which it used before
`validation_set.target_ranks`.
"""

from __future__ import annotations

import numpy as np
import pytest

from homefeed.config import TrainConfig

pytestmark = pytest.mark.timeout(900)  # the first slow test to ask builds conftest.py's session stages


def _trainer(transform_dir, **overrides):
    import keras
    from trainer_testdata import SMALL_TRAIN_CONFIG

    from trainer.model import two_tower as model_lib
    from trainer.training import data as data_lib
    from trainer.training.train import Trainer

    config = TrainConfig(**{**SMALL_TRAIN_CONFIG, "dropout": 0.0, "id_dropout": 0.0, **overrides})
    data = data_lib.TransformedData.open(transform_dir)
    stats = data_lib.training_statistics(data)
    keras.utils.set_random_seed(config.seed)
    model = model_lib.TwoTowerModel(data.vocab, data.history_length, config)
    model.build_all()
    batches = list(data_lib.training_dataset(data, config.batch_size, 1000, config.seed, cache=False).take(3))
    return Trainer(model, stats, config), batches


@pytest.mark.slow
def test_compiled_adam_update_gives_the_weights_of_keras_adam(transform_dir):
    import keras

    fast, batches = _trainer(transform_dir, num_sampled_negatives=8, fused_adam=True, lazy_adam=False)
    reference, _ = _trainer(transform_dir, num_sampled_negatives=8, lazy_adam=False)  # the plain Keras call
    before = fast.snapshot()
    for batch in batches:
        assert float(fast.step(batch)) == pytest.approx(float(reference.step(batch)), rel=1e-5)
    after = fast.snapshot()
    # Equal up to float rounding: fused and unfused arithmetic round differently, and Adam scales
    # a near-zero gradient (the attention key bias's) to a full step. Textbook dense Adam (moments
    # decayed on every row) would differ by ~1e-3 after these 3 steps of learning rate 0.01.
    for got, want, variable in zip(after, reference.snapshot(), fast.model.weights):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5, err_msg=variable.path)
    embedding = next(i for i, v in enumerate(fast.model.weights) if v.path.startswith("article_embedding"))
    moved = np.abs(after[embedding] - before[embedding]).sum(axis=1) > 0
    assert 0 < moved.sum() < len(moved)  # trained, and rows never looked up stay where they were
    assert int(fast.optimizer.iterations) == len(batches) and isinstance(fast.optimizer, keras.optimizers.Adam)


@pytest.mark.parametrize("batch_size", [1024, 7])
def test_validation_ranks_are_the_reference_ranks_with_ties_exclusions_and_misses(batch_size):
    from trainer.evaluation import metrics
    from trainer.training.validation_set import EvalSet, target_ranks

    rng = np.random.default_rng(0)
    # Small integer vectors: many exact score ties, so the tie rule (lower corpus index first) counts.
    users = rng.integers(-2, 3, (300, 4)).astype(np.float32)
    articles = rng.integers(-2, 3, (500, 4)).astype(np.float32)
    targets = rng.integers(0, 500, 300)
    targets[:20] = -1  # not in the corpus
    exclude = [np.unique(rng.integers(0, 500, rng.integers(0, 40))) for _ in range(300)]
    exclude[25] = np.array([targets[25], 3])  # the target itself was viewed: a miss
    exclude[26] = np.zeros(0, np.int64)
    exclude[40] = np.unique(rng.integers(0, 500, 400))  # a heavy user: their batch's exclusions are wider
    eval_set = EvalSet({}, targets, exclude)
    want = metrics.batched_ranks(users, articles, targets, exclude)
    got = target_ranks(users, articles, eval_set, batch_size=batch_size)
    np.testing.assert_array_equal(got, want)
    assert (got == metrics.MISSED).sum() >= 21 and len(set(got[got != metrics.MISSED])) > 50


@pytest.mark.slow
def test_each_epoch_logs_its_seconds_validation_seconds_and_cpu_seconds(trained):
    for epoch in trained.result.metrics["epochs"]:
        assert 0 < epoch["validation_seconds"] <= epoch["seconds"]
        assert epoch["cpu_seconds"] > 0


@pytest.mark.slow
def test_lazy_adam_moves_the_looked_up_rows_as_keras_adam_and_leaves_the_others(transform_dir):
    from trainer.training.lazy_adam import LazyAdam

    # Small batches, so that some rows of the 61-article table are not looked up by the second.
    lazy, batches = _trainer(transform_dir, lazy_adam=True, batch_size=4)
    reference, _ = _trainer(transform_dir, batch_size=4, lazy_adam=False)
    assert isinstance(lazy.optimizer, LazyAdam) and not isinstance(reference.optimizer, LazyAdam)
    lazy.optimizer.min_lazy_rows = 1  # the test data's tables are small; big ones are lazy by default
    embedding = next(i for i, v in enumerate(lazy.model.weights) if v.path.startswith("article_embedding"))
    before = lazy.snapshot()
    # First step: every moment is zero before it, so Adam moves exactly the rows in the batch,
    # lazily or not, and by the same amount where a row was looked up once. (A row looked up n
    # times: LazyAdam's second moment takes the square of the summed gradient, as TF Addons'
    # LazyAdam and dense Adam on a dense gradient do; Keras's Adam squares each lookup's gradient
    # before summing.) Dense weights: equal.
    import tensorflow as tf

    from trainer.model.two_tower import HISTORY_KEY, LABEL_KEY

    def looked_up(batch):  # padding (-1) is looked up as row 0 (masked, a zero gradient, but looked up)
        return np.clip(np.concatenate([np.ravel(batch[k].numpy()) for k in (HISTORY_KEY, LABEL_KEY)]), 0, None)

    variables = lazy.model.trainable_variables
    gradients = dict(zip((v.path for v in variables), lazy.loss_and_gradients(batches[0])[1]))
    once = np.bincount(looked_up(batches[0]), minlength=before[embedding].shape[0]) == 1
    assert float(lazy.step(batches[0])) == pytest.approx(float(reference.step(batches[0])), rel=1e-6)
    after = lazy.snapshot()
    for i, (got, want, variable) in enumerate(zip(after, reference.snapshot(), lazy.model.weights)):
        if i == embedding:
            assert once.sum() > 5
            np.testing.assert_allclose(got[once], want[once], rtol=1e-5, atol=1e-6, err_msg=variable.path)
        elif not isinstance(gradients.get(variable.path), tf.IndexedSlices):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=variable.path)
    first = lazy.snapshot()[embedding]
    # Later steps: a row the batch did not look up stays put under LazyAdam; Keras's Adam keeps
    # moving it with its decaying momentum.
    lazy.step(batches[1])
    reference.step(batches[1])
    ids = looked_up(batches[1])
    untouched = np.setdiff1d(np.flatnonzero(np.abs(first - before[embedding]).sum(axis=1) > 0), ids)
    assert len(untouched) > 0
    np.testing.assert_array_equal(lazy.snapshot()[embedding][untouched], first[untouched])
    assert np.abs(reference.snapshot()[embedding][untouched] - first[untouched]).max() > 1e-4


@pytest.mark.slow
def test_xla_dense_step_gives_the_plain_loss_gradients_and_sparse_table_gradients(transform_dir):
    import tensorflow as tf

    # Dropout off: XLA draws its own dropout masks (the search-only draw is outside, the same).
    fast, batches = _trainer(transform_dir, num_sampled_negatives=8, xla_dense=True, lazy_adam=True)
    reference, _ = _trainer(transform_dir, num_sampled_negatives=8, lazy_adam=True)
    loss_and_gradients = tf.function(fast.loss_and_gradients)
    loss, gradients = loss_and_gradients(batches[0])
    want_loss, want_gradients = tf.function(reference.loss_and_gradients)(batches[0])
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-5)
    for got, want, variable in zip(gradients, want_gradients, fast.model.trainable_variables):
        # Embedding tables' gradients stay the looked-up rows: lazy Adam updates only those.
        assert isinstance(got, tf.IndexedSlices) == isinstance(want, tf.IndexedSlices), variable.path
        got, want = tf.convert_to_tensor(got).numpy(), tf.convert_to_tensor(want).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5, err_msg=variable.path)
    assert isinstance(
        gradients[[v.path for v in fast.model.trainable_variables].index("article_embedding/embeddings")],
        tf.IndexedSlices,
    )
    for batch in batches:
        assert float(fast.step(batch)) == pytest.approx(float(reference.step(batch)), rel=1e-4)
    for got, want, variable in zip(fast.snapshot(), reference.snapshot(), fast.model.weights):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4, err_msg=variable.path)


def test_xla_dense_with_gru_pooling_is_refused_before_training():
    from trainer.training import dense_step

    with pytest.raises(ValueError, match="xla_dense does not support user_pooling='gru'"):
        dense_step.dense_loss(None, TrainConfig(xla_dense=True, user_pooling="gru"))
    assert callable(dense_step.dense_loss(None, TrainConfig(xla_dense=False, user_pooling="gru")))


def test_lookups_gather_rows_from_the_table_equal_to_keras_embedding_after_a_sparse_update():
    """`TwoTowerModel._lookup` reads rows (ResourceGather), not the whole table: once a sparse
    update (lazy Adam's scatter) has put the table in copy-on-read mode, a whole read copies it.
    Reference: the Keras Embedding layer's own call; the gradient stays IndexedSlices."""
    import tensorflow as tf

    from trainer.model import two_tower as model_lib

    vocab = model_lib.VocabularySizes(articles=50, attributes={"category": 4}, known_articles=48)
    model = model_lib.TwoTowerModel(vocab, 5, TrainConfig(embedding_dim=8, tower_units=(8,), output_dim=4))
    model.build_all()
    table = model.article_embedding.embeddings.value
    table.scatter_sub(tf.IndexedSlices(tf.ones([2, 8]), tf.constant([3, 7]), tf.constant([50, 8])))  # copy-on-read now
    ids = tf.constant([[3, 7, -1, 60, 0]])
    history = {
        model_lib.HISTORY_KEY: ids,
        model_lib.history_attribute_key("category"): tf.constant([[1, 2, -1, 9, 0]]),
        model_lib.AGE_KEY: tf.zeros([1]),
    }
    with tf.GradientTape() as tape:
        got = model.user_lookups(history)["history"]
        loss = tf.reduce_sum(got * got)
    np.testing.assert_array_equal(got.numpy(), model.article_embedding(tf.clip_by_value(ids, 0, 49)).numpy())
    gradient = tape.gradient(loss, model.article_embedding.embeddings)
    assert isinstance(gradient, tf.IndexedSlices)
    graph = tf.function(lambda: model.user_lookups(history)["history"]).get_concrete_function().graph
    types = {op.type for op in graph.get_operations()}
    assert "ResourceGather" in types and "ReadVariableOp" not in types


def test_a_small_attribute_table_pooled_as_a_bag_equals_the_masked_mean_of_its_rows_and_its_gradient():
    """History attributes with a small table are pooled as (counts of each value) x table. Reference:
    the masked mean of the gathered rows (what the tower computed before) and that gather's gradient
    summed per row: equal up to rounding, the gradient now dense. A table over BAG_MAX_ROWS is
    gathered as before."""
    import tensorflow as tf

    from trainer.model import two_tower as model_lib

    vocab = model_lib.VocabularySizes(
        articles=50, attributes={"category": 6, "region": model_lib.BAG_MAX_ROWS + 1}, known_articles=48
    )
    config = TrainConfig(embedding_dim=8, attribute_embedding_dim=4, tower_units=(8,), output_dim=4, dropout=0.0)
    model = model_lib.TwoTowerModel(vocab, 5, config)
    model.build_all()
    category = tf.constant([[1, 2, 2, -1, 9], [-1, -1, -1, -1, -1], [5, 0, 1, 1, 1]])
    history = {
        model_lib.HISTORY_KEY: tf.constant([[3, 7, 8, -1, -1], [-1] * 5, [1, 2, 3, 4, 5]]),
        model_lib.history_attribute_key("category"): category,
        model_lib.history_attribute_key("region"): tf.constant([[1, 2, 3, -1, -1], [-1] * 5, [0, 1, 1, 1, 1]]),
        model_lib.AGE_KEY: tf.zeros([3]),
    }
    table = model.history_attribute_embeddings["category"].embeddings
    weights = tf.random.stateless_normal([3, 4], seed=[1, 2])
    with tf.GradientTape(persistent=True) as tape:
        looked_up = model.user_lookups(history)
        assert "attribute_category_bag" in looked_up and "attribute_region" in looked_up
        got = model.user_from_lookups(looked_up)
        gathered = {k: v for k, v in looked_up.items() if k != "attribute_category_bag"}
        gathered["attribute_category"] = tf.gather(table, tf.clip_by_value(category, 0, 5))
        gathered["attribute_category_mask"] = (history[model_lib.HISTORY_KEY] >= 0) & (category >= 0)
        want = model.user_from_lookups(gathered)  # the masked mean of the rows, as before
        got_loss, want_loss = tf.reduce_sum(got * weights), tf.reduce_sum(want * weights)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        looked_up["attribute_category_bag"].numpy(), [[0, 1, 2, 0, 0, 0], [0] * 6, [1, 3, 0, 0, 0, 1]]
    )
    got_gradient, want_gradient = tape.gradient(got_loss, table), tape.gradient(want_loss, table)
    assert not isinstance(got_gradient, tf.IndexedSlices)
    np.testing.assert_allclose(got_gradient.numpy(), tf.convert_to_tensor(want_gradient).numpy(), rtol=1e-5, atol=1e-7)


def test_fit_takes_each_epoch_from_repeated_batches_and_refuses_a_dataset_that_ends():
    """Each epoch takes the next `steps_per_epoch` batches of one repeated dataset (the end of a pass
    never reaches the parse stage); a dataset that ends before an epoch is full is an error naming
    the fix, not a short epoch."""
    import tensorflow as tf

    from trainer.model import two_tower as model_lib
    from trainer.training.epochs import fit

    seen = []

    class Recording:  # the Trainer's part fit uses without a validation set
        config = TrainConfig(epochs=2, early_stopping_patience=0)

        def step(self, batch):
            seen.append(int(batch))
            return tf.constant(1.0)

    corpus = {model_lib.LABEL_KEY: np.arange(5)}
    log = fit(Recording(), tf.data.Dataset.range(3).repeat(), 2, None, corpus)
    assert seen == [0, 1, 2, 0] and log["epochs_run"] == 2
    with pytest.raises(ValueError, match=r"ended after 1 of epoch 2's 2 batches.*repeat=True"):
        fit(Recording(), tf.data.Dataset.range(3), 2, None, corpus)
