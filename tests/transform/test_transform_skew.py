"""Skew and OOV: the Beam path and the exported transform, called as serving calls it, agree.

Serving (trainer/towers/serving_model.py) sends dense, right-padded string histories and a float age;
the model turns them into SparseTensors with `tf.sparse.from_dense` (which drops the "" padding)
and runs `TFTransformOutput.transform_features_layer()` on only those serving features. Here a
small tf.Module does exactly that, is saved and reloaded as a SavedModel (the way serving loads
it), and its features are compared with the tf.Examples the Beam job wrote for the same users.
"""

from __future__ import annotations

import glob

import numpy as np
import pytest
from transform_testdata import UNSEEN_HISTORY, UNSEEN_LABEL, H

from homefeed import features
from homefeed.config import TransformConfig
from trainer.towers.serving_model import HISTORY_KEYS, QUERY_KEYS, pad_histories

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the first test to ask runs conftest.py's Beam transform

XF = features.transformed_name
SERVED_OUTPUTS = (
    *(XF(k) for k in HISTORY_KEYS),
    XF(features.SEARCH_TOKENS),
    XF(features.LAST_QUERY_TOKENS),
    XF(features.EXAMPLE_AGE),
)
PAD_ID = -1  # padding of the dense outputs below: never a real id


def _serving_module(transform_dir: str):
    """A tf.Module shaped like the serving model's front: padded strings in, transformed out."""
    import tensorflow as tf
    import tensorflow_transform as tft

    class ServingTransform(tf.Module):
        def __init__(self):
            super().__init__()
            self.tft_layer = tft.TFTransformOutput(transform_dir).transform_features_layer()

        @tf.function(
            input_signature=[
                {k: tf.TensorSpec([None, None], tf.string, name=k) for k in (*HISTORY_KEYS, *QUERY_KEYS)}
                | {features.EXAMPLE_AGE: tf.TensorSpec([None], tf.float32, name=features.EXAMPLE_AGE)}
            ]
        )
        def serve(self, raw):
            inputs = {k: tf.sparse.from_dense(raw[k]) for k in (*HISTORY_KEYS, *QUERY_KEYS)}
            inputs[features.EXAMPLE_AGE] = raw[features.EXAMPLE_AGE]
            outputs = self.tft_layer(inputs)
            return {
                k: tf.sparse.to_dense(v, default_value=PAD_ID) if isinstance(v, tf.SparseTensor) else v
                for k, v in outputs.items()
            }

    return ServingTransform()


@pytest.fixture(scope="module")
def served(transform_run, tmp_path_factory):
    """`serve(rows, ages, history_length)` through the saved-and-reloaded serving module."""
    import tensorflow as tf

    path = str(tmp_path_factory.mktemp("serving") / "saved_model")
    tf.saved_model.save(_serving_module(str(transform_run.output_dir)), path)
    loaded = tf.saved_model.load(path)

    def serve(rows, ages, history_length=1000):
        padded = pad_histories(rows, history_length)
        raw = {k: tf.constant(v, tf.string) for k, v in padded.items()}
        raw[features.EXAMPLE_AGE] = tf.constant(ages, tf.float32)
        out = {k: v.numpy() for k, v in loaded.serve(raw).items()}
        result = []
        for i in range(len(rows)):
            row = {}
            for k, v in out.items():
                row[k] = [int(x) for x in v[i] if x != PAD_ID] if v.ndim == 2 else float(v[i])
            result.append(row)
        return result

    return serve


def _beam_examples(transform_dir, split: str) -> list[dict]:
    import tensorflow as tf
    import tensorflow_transform as tft

    spec = tft.TFTransformOutput(str(transform_dir)).transformed_feature_spec()
    files = sorted(glob.glob(str(transform_dir / split / "part-*.tfrecord.gz")))
    examples = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        parsed = tf.io.parse_single_example(record, spec)
        row = {}
        for k, v in parsed.items():
            v = (v.values if isinstance(v, tf.SparseTensor) else v).numpy()
            row[k] = v.tolist() if isinstance(v, np.ndarray) else v.item() if hasattr(v, "item") else v
        examples.append(row)
    return examples


def _by_user_and_age(examples):
    return {(e[features.USER_ID].decode(), round(e[XF(features.EXAMPLE_AGE)], 5)): e for e in examples}


@pytest.mark.parametrize("split", features.SPLITS)
def test_beam_and_serving_features_are_identical(transform_run, served, split):
    rows = [r for r in transform_run.good if r[features.SPLIT] == split]
    beam = _by_user_and_age(_beam_examples(transform_run.output_dir, split))
    assert len(beam) == len(rows)
    # Histories longer than H go in whole: the transform itself must cut them, as in training.
    assert any(len(r[features.HISTORY]) > H for r in rows)
    serving = served(rows, [r[features.EXAMPLE_AGE] for r in rows])
    for row, got in zip(rows, serving):
        assert set(got) == set(SERVED_OUTPUTS), "serving must get exactly the history, search and age features"
        expected = beam[(row[features.USER_ID], round(got[XF(features.EXAMPLE_AGE)], 5))]
        for key in SERVED_OUTPUTS[:-1]:
            assert got[key] == expected[key], (row[features.USER_ID], key)
            if key not in (XF(features.SEARCH_TOKENS), XF(features.LAST_QUERY_TOKENS)):
                assert len(got[key]) == min(H, len(row[features.HISTORY]))
        assert got[XF(features.EXAMPLE_AGE)] == pytest.approx(expected[XF(features.EXAMPLE_AGE)], abs=1e-6)
    # The raw queries were not normalised (full-width, upper case, Korean, Cyrillic): both paths
    # normalise them the same way (compared above), and the rows do carry tokens.
    assert any(got[XF(features.SEARCH_TOKENS)] for got in serving)


def test_serving_truncation_before_the_call_changes_nothing(transform_run, served):
    """UserEncoder cuts histories to H before calling; the transform's own cut gives the same."""
    rows = [r for r in transform_run.good if len(r[features.HISTORY]) > H]
    assert rows
    ages = [0.0] * len(rows)
    assert served(rows, ages, history_length=H) == served(rows, ages)


def oov_ids(output, vocabulary: str) -> range:
    """The ids unknown values hash into: right after the vocabulary, one per OOV bucket."""
    size = output.vocabulary_size_by_name(vocabulary)
    return range(size, size + TransformConfig().num_oov_buckets)  # the test run's config is the default


def test_unseen_articles_get_the_oov_id_in_both_paths(transform_run, served):
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(str(transform_run.output_dir))
    oov = oov_ids(output, features.ARTICLE_VOCAB)
    beam = {e[features.USER_ID].decode(): e for e in _beam_examples(transform_run.output_dir, features.TEST_SPLIT)}
    test_rows = {r[features.USER_ID]: r for r in transform_run.good if r[features.SPLIT] == features.TEST_SPLIT}

    # Beam path: the test-only history entry and the test-only label.
    with_unseen_history = test_rows["u06"]
    assert with_unseen_history[features.HISTORY][0] == UNSEEN_HISTORY
    unseen_id = beam["u06"][XF(features.HISTORY)][0]
    assert unseen_id in oov
    assert max(beam["u06"][XF(features.HISTORY)][1:]) < oov.start
    assert test_rows["u07"][features.LABEL] == UNSEEN_LABEL
    assert beam["u07"][XF(features.LABEL)] in oov

    # Serving path: the same history, and an id nobody has ever seen, among known ones; the same
    # unknown value lands in the same bucket in both paths.
    never_seen = {features.HISTORY: ["brand-new", with_unseen_history[features.HISTORY][1], UNSEEN_HISTORY]}
    got = served([with_unseen_history, never_seen], [0.0, 0.0])
    assert got[0][XF(features.HISTORY)] == beam["u06"][XF(features.HISTORY)]
    brand_new, known, unseen = got[1][XF(features.HISTORY)]
    assert brand_new in oov and known == beam["u06"][XF(features.HISTORY)][1] and unseen == unseen_id
    # Missing attributes (serving fills MISSING_ATTRIBUTE) are unknown categories, not a crash.
    categories = got[1][XF(features.history_attribute("category"))]
    assert len(set(categories)) == 1 and categories[0] in oov_ids(output, features.vocabulary_name("category"))


def test_label_oov_in_the_exported_graph_when_a_label_is_given(transform_run):
    """The label path of the exported graph maps an unseen label to the OOV id too."""
    import tensorflow as tf
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(str(transform_run.output_dir))
    layer = output.transform_features_layer()
    got = layer({features.LABEL: tf.constant([UNSEEN_LABEL, "a00"])})
    assert set(got) == {XF(features.LABEL)}
    known = output.vocabulary_by_name(features.ARTICLE_VOCAB).index(b"a00")
    unseen, a00 = got[XF(features.LABEL)].numpy().tolist()
    assert unseen in oov_ids(output, features.ARTICLE_VOCAB) and a00 == known
