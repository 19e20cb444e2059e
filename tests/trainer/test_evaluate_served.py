"""The evaluation ranks each test view over the corpus live at its time, every vector made by the
model's article tower at the listing's age then (trainer/evaluation/served_corpus.py), checked on the
session's trained model against a reference built from the SavedModel signatures directly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from homefeed import features
from homefeed.config import EvaluateConfig
from homefeed.layout import extract_dir as extract_layout
from homefeed.layout import model_dir as layout
from trainer.evaluation import metrics as metrics_lib
from trainer.towers import article_inputs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
]  # the first test to ask builds conftest.py's session stages (Beam transform, training)


def _timed_extract(trained, tmp_path, test_time: pd.Timestamp):
    """The planted extract with every test view at `test_time` (the other views' times unknown)."""
    extract = tmp_path / "extract"
    shutil.copytree(trained.extract_dir, extract)
    path = extract / extract_layout.TRAINING_EXAMPLES_FILE
    table = pq.read_table(path)
    is_test = pc.equal(table.column(features.SPLIT), features.TEST_SPLIT).to_numpy(zero_copy_only=False)
    times = pa.array([test_time if t else None for t in is_test], table.schema.field(features.VIEWED_AT).type)
    table = table.set_column(table.schema.get_field_index(features.VIEWED_AT), features.VIEWED_AT, times)
    pq.write_table(table, path)
    return extract, table.filter(pa.array(is_test)).to_pandas().sort_values(features.USER_ID, kind="stable")


def test_views_a_month_after_as_of_are_ranked_with_every_listing_re_embedded_at_its_age_then(trained, tmp_path):
    from trainer.evaluation.evaluate import evaluate_model
    from trainer.evaluation.held_out import row_dicts as _row_dicts
    from trainer.towers.serving_model import UserEncoder

    model_dir = tmp_path / "model"
    shutil.copytree(trained.result.model_dir, model_dir)
    manifest = layout.load_manifest(model_dir)
    test_time = pd.Timestamp(manifest["article_ages_at_ms"], unit="ms", tz="UTC") + pd.Timedelta(days=30)
    extract, test_rows = _timed_extract(trained, tmp_path, test_time)
    config = EvaluateConfig(ks=(1, 5, 10, 20), exclude_seen=False)
    result = evaluate_model(model_dir, extract, config)
    assert result["protocol"]["corpus"] == "live at each view"

    # Reference: the whole as_of corpus (all created before the views, none sold), each listing
    # embedded through the article signature at `test_time`, exact search.
    encoder = UserEncoder(model_dir)
    corpus = pd.read_parquet(model_dir / layout.ARTICLES_FILE)
    ids = (model_dir / layout.ARTICLE_IDS_FILE).read_text().splitlines()
    corpus = corpus.set_index(features.ARTICLE_ID).loc[ids].reset_index()
    vectors = encoder.article_vectors(article_inputs.corpus_article_features(corpus, test_time.value / 1e6))
    exported = np.load(model_dir / layout.ARTICLE_VECTORS_FILE)
    assert not np.allclose(vectors, exported)  # the month moved the ages: the vectors differ
    users = encoder.encode(_row_dicts(test_rows.reset_index(drop=True)))
    targets = pd.Index(ids).get_indexer(test_rows[features.LABEL].astype(str))
    ranks = metrics_lib.target_ranks(users @ vectors.T, targets)
    for k in config.ks:
        assert result["model"][f"recall@{k}"] == pytest.approx(metrics_lib.recall_at_k(ranks, k), abs=1e-9), k
    stale = metrics_lib.target_ranks(users @ exported.T, targets)
    assert not np.array_equal(ranks, stale)  # the figure is not the as_of vectors' one ...
    for k in config.ks:  # ... which is reported beside it, as a replay against the export gives
        assert result["as_of_corpus"]["model"][f"recall@{k}"] == pytest.approx(
            metrics_lib.recall_at_k(stale, k), abs=1e-9
        )


def _write_listings(model_dir, extract, removed: dict[str, pd.Timestamp]) -> None:
    """The extract's listings.parquet: the model's corpus, up for good except `removed` (id -> time)."""
    corpus = pd.read_parquet(model_dir / layout.ARTICLES_FILE)
    columns = [c for c in features.LISTINGS_COLUMNS if c in corpus.columns]
    listings = corpus[columns].assign(
        **{features.REMOVED_AT: pd.to_datetime(corpus[features.ARTICLE_ID].map(removed), utc=True)}
    )
    listings.to_parquet(extract / extract_layout.LISTINGS_FILE, index=False)


def test_a_listing_the_model_lacks_is_ranked_while_its_listing_was_up(trained, tmp_path):
    """A test target missing from the model's corpus is a candidate at its view while the extract's
    listings say it was up (embedded from its listing's attributes), and not once it was removed."""
    from trainer.evaluation.evaluate import evaluate_model

    model_dir = tmp_path / "model"
    shutil.copytree(trained.result.model_dir, model_dir)
    manifest = layout.load_manifest(model_dir)
    as_of = pd.Timestamp(manifest["article_ages_at_ms"], unit="ms", tz="UTC")
    extract, test_rows = _timed_extract(trained, tmp_path, as_of)
    _write_listings(model_dir, extract, {})
    before = evaluate_model(model_dir, extract, EvaluateConfig(ks=(10, 20)))
    assert before["targets_outside_corpus"] == 0 and before["served_corpus"]["listings"] == len(
        (model_dir / layout.ARTICLE_IDS_FILE).read_text().splitlines()
    )
    # Take the most viewed test target out of the model's corpus: it was sold before as_of.
    sold = test_rows[features.LABEL].value_counts().index[0]
    ids = (model_dir / layout.ARTICLE_IDS_FILE).read_text().splitlines()
    keep = [i for i, a in enumerate(ids) if a != sold]
    (model_dir / layout.ARTICLE_IDS_FILE).write_text("\n".join(ids[i] for i in keep) + "\n")
    np.save(model_dir / layout.ARTICLE_VECTORS_FILE, np.load(model_dir / layout.ARTICLE_VECTORS_FILE)[keep])
    for name in (layout.ARTICLE_IDS_FILE, layout.ARTICLE_VECTORS_FILE):  # the manifest describes the new files
        manifest["files"][name] = {
            "bytes": (model_dir / name).stat().st_size,
            "sha256": layout.sha256_file(model_dir / name),
        }
    (model_dir / layout.MANIFEST_FILE).write_text(json.dumps(manifest))
    # Sold an hour after the views: up at their time.
    _write_listings(trained.result.model_dir, extract, {sold: as_of + pd.Timedelta(hours=1)})
    after = evaluate_model(model_dir, extract, EvaluateConfig(ks=(10, 20)))
    assert after["targets_outside_corpus"] == 0 and after["served_corpus"]["listings"] == len(ids)
    # Its views still count: recall moves by at most what ties with the re-embedded vector can.
    assert after["model"]["recall@20"] == pytest.approx(before["model"]["recall@20"], abs=2 / len(test_rows))
    # Sold at the views' time (removed_at is exclusive): never a candidate, every view of it a miss,
    # however often it was viewed.
    _write_listings(trained.result.model_dir, extract, {sold: as_of})
    gone = evaluate_model(model_dir, extract, EvaluateConfig(ks=(10, 20)))
    views_of_sold = int((test_rows[features.LABEL] == sold).sum())
    assert gone["model"]["recall@20"] <= 1.0 - views_of_sold / len(test_rows) + 1e-9


def test_the_published_model_is_re_run_on_the_same_views_and_compared_pairwise(trained, tmp_path):
    from trainer.evaluation.evaluate import evaluate_model

    model_dir = tmp_path / "model"
    shutil.copytree(trained.result.model_dir, model_dir)
    manifest = layout.load_manifest(model_dir)
    as_of = pd.Timestamp(manifest["article_ages_at_ms"], unit="ms", tz="UTC")
    extract, _ = _timed_extract(trained, tmp_path, as_of)
    _write_listings(model_dir, extract, {})
    config = EvaluateConfig(ks=(10, 20))
    result = evaluate_model(model_dir, extract, config, published_model_dir=trained.result.model_dir)
    # The same model twice: the same ranks view by view, so the paired ratio has no spread at all,
    # while each recall alone carries a sampling interval.
    assert result["published"]["recall@20"] == result["model"]["recall@20"]
    assert result["published"]["model_version"] == manifest["model_version"]
    paired = result["intervals"]["ratio"]["model/published"]["recall@20"]
    assert paired["ratio"] == 1.0 and paired["interval"] == [1.0, 1.0]
    low, high = result["intervals"]["recall"]["model"]["recall@20"]
    assert low < result["model"]["recall@20"] < high
    for name in result["baselines"]:
        assert f"model/{name}" in result["intervals"]["ratio"], name
