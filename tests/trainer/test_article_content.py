"""The article tower reads content: new listings get vectors of their own, the same from every path.

Uses the session's trained model (conftest.py; titles carry each category's words, created_at
spreads ages over several buckets).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from trainer_testdata import CREATED_BASE, NEW_ARTICLE, category, region

from homefeed import features
from homefeed.layout import model_dir as layout
from trainer.towers import article_inputs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
]  # the first test to ask builds conftest.py's session stages (Beam transform, training)


def _signature(model_dir):
    import tensorflow as tf

    return tf.saved_model.load(str(model_dir / layout.SAVED_MODEL_DIR)).signatures[layout.ARTICLE_SIGNATURE]


def _vectors(signature, ids, categories, regions, titles, created, now_ms):
    raw = article_inputs.raw_article_features(ids, {"category": categories, "region": regions}, titles, created, now_ms)
    return article_inputs.call_article_signature(signature, raw)


def test_new_listings_in_one_category_and_region_with_different_titles_get_different_vectors(trained):
    signature = _signature(trained.result.model_dir)
    now = CREATED_BASE.value / 1e6
    created = [CREATED_BASE - pd.Timedelta(minutes=5)] * 3
    vectors = _vectors(
        signature,
        ["brand-new-1", "brand-new-2", "brand-new-1"],
        ["c0"] * 3,
        ["r0"] * 3,
        ["Brand new Oak Desk", "Brand new Yoga Mat", "Brand new Oak Desk"],
        created,
        now,
    )
    # Different titles: clearly different vectors (cosine well below 1); the same listing twice: identical.
    assert float(vectors[0] @ vectors[1]) < 0.99
    np.testing.assert_array_equal(vectors[0], vectors[2])
    # Two new listings with the same title and attributes but different ids can still differ by
    # their OOV bucket; with the OOV id dropped (same id) only the age moves the vector.
    older = _vectors(
        signature, ["brand-new-1"], ["c0"], ["r0"], ["Brand new Oak Desk"], [CREATED_BASE - pd.Timedelta(days=30)], now
    )
    assert not np.allclose(older[0], vectors[0])


def test_live_path_vector_equals_the_pipeline_export(trained):
    """serving/live/model.embed_articles (PUT /v1/articles, re-embedding) at the export's `now`
    gives the exported corpus vector of the same listing, bit for bit up to float rounding."""
    import faiss

    from serving.live.articles import ArticleRecord
    from serving.live.model import embed_articles
    from serving.versions.pair import ModelPair
    from trainer.towers.serving_model import UserEncoder

    model_dir = trained.result.model_dir
    manifest = layout.load_manifest(model_dir)
    ids = (model_dir / layout.ARTICLE_IDS_FILE).read_text().splitlines()
    vectors = np.load(model_dir / layout.ARTICLE_VECTORS_FILE)
    corpus = pd.read_parquet(model_dir / layout.ARTICLES_FILE).set_index(features.ARTICLE_ID)
    pair = ModelPair(
        version=manifest["model_version"],
        model_dir=model_dir,
        encoder=UserEncoder(model_dir),
        index=faiss.IndexFlatIP(vectors.shape[1]),
        article_ids=ids,
        titles=None,
        popular=[],
        histories=None,
        index_manifest={},
        manifest=manifest,
    )
    chosen = [ids[0], ids[23], NEW_ARTICLE]
    records = [
        ArticleRecord(
            a,
            title=corpus.loc[a, features.TITLE],
            category=category(a),
            region=region(a),
            created_at=corpus.loc[a, features.CREATED_AT].isoformat(),
        )
        for a in chosen
    ]
    live = embed_articles(pair, records, now_ms=manifest["article_ages_at_ms"])
    np.testing.assert_allclose(live, vectors[[ids.index(a) for a in chosen]], rtol=1e-5, atol=1e-6)
    # Later, the ages (and so the vectors) move on: what the re-embedding job refreshes.
    later = embed_articles(pair, records[:1], now_ms=manifest["article_ages_at_ms"] + 40 * 86_400_000)
    assert not np.allclose(later[0], live[0])


def test_the_live_corpus_re_embeds_listings_whose_age_bucket_changed(trained):
    """serving/live/ages.py through LiveCorpus.refresh_ages: at the export's time nothing is stale;
    40 days later every dated listing is, and the overlay serves its vector at the new age."""
    import faiss

    from serving.live.articles import EmbeddedArticleLog
    from serving.live.corpus import LiveCorpus
    from serving.live.model import embed_articles
    from serving.versions.pair import ModelPair
    from trainer.towers.serving_model import UserEncoder

    model_dir = trained.result.model_dir
    manifest = layout.load_manifest(model_dir)
    ids = (model_dir / layout.ARTICLE_IDS_FILE).read_text().splitlines()
    vectors = np.load(model_dir / layout.ARTICLE_VECTORS_FILE)
    pair = ModelPair(
        version=manifest["model_version"],
        model_dir=model_dir,
        encoder=UserEncoder(model_dir),
        index=faiss.IndexFlatIP(vectors.shape[1]),
        article_ids=ids,
        titles=None,
        popular=[],
        histories=None,
        index_manifest={},
        manifest=manifest,
    )
    corpus = LiveCorpus(EmbeddedArticleLog())
    at_export = manifest["article_ages_at_ms"]
    assert corpus.refresh_ages(pair, now_ms=at_export) == 0
    later = at_export + 40 * 86_400_000
    assert corpus.refresh_ages(pair, now_ms=later) == len(ids)  # every row has a created_at
    overlay = corpus.overlay(pair)
    assert overlay.dead_rows.size == len(ids) and overlay.n_side == len(ids)
    row = overlay.side_row_of[ids[5]]
    from serving.live.articles import ArticleRecord

    record = overlay.records[ids[5]]
    expected = embed_articles(
        pair,
        [
            ArticleRecord(
                ids[5], title=record.title, category=record.category, region=record.region, created_at=record.created_at
            )
        ],
        later,
    )
    np.testing.assert_allclose(overlay.side_vectors[row], expected[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(overlay.side_vectors[row], vectors[5])
    assert corpus.refresh_ages(pair, now_ms=later + 60_000) == 0  # nothing moved on since
    assert corpus.ages.stats["reembedded"] == len(ids)


def test_an_events_clock_ages_listings_at_the_latest_posted_view(trained):
    """serving/live/clock.py: with `listing_age_clock=events` an upserted listing is embedded, and
    the model's rows re-embedded, at the time of the latest view posted, not at the wall clock."""
    import faiss

    from serving.live.articles import ArticleRecord, EmbeddedArticleLog
    from serving.live.clock import ListingClock
    from serving.live.corpus import LiveCorpus
    from serving.live.events import LiveView
    from serving.live.model import embed_articles
    from serving.versions.pair import ModelPair
    from trainer.towers.serving_model import UserEncoder

    model_dir = trained.result.model_dir
    manifest = layout.load_manifest(model_dir)
    ids = (model_dir / layout.ARTICLE_IDS_FILE).read_text().splitlines()
    vectors = np.load(model_dir / layout.ARTICLE_VECTORS_FILE)
    pair = ModelPair(
        version=manifest["model_version"],
        model_dir=model_dir,
        encoder=UserEncoder(model_dir),
        index=faiss.IndexFlatIP(vectors.shape[1]),
        article_ids=ids,
        titles=None,
        popular=[],
        histories=None,
        index_manifest={},
        manifest=manifest,
    )
    at_export = manifest["article_ages_at_ms"]
    corpus = LiveCorpus(EmbeddedArticleLog(), ListingClock("events"))
    assert corpus.clock.now_ms(pair) == at_export  # no event yet: the model's as_of
    assert corpus.refresh_ages(pair) == 0
    replayed = int(at_export + 40 * 86_400_000)
    corpus.clock.observe([LiveView("u1", ids[0], replayed, "k")])
    from serving.live.items import format_timestamp

    created = format_timestamp(replayed - 3 * 3_600_000)  # 3 h old then; unknown (future) at the as_of
    fresh = ArticleRecord(
        "fresh-1", title="red bike", category="bikes", region="north", created_at=created, updated_ms=replayed
    )
    corpus.upsert([fresh], pair)
    row = corpus.overlay(pair).side_row_of["fresh-1"]
    np.testing.assert_allclose(
        corpus.overlay(pair).side_vectors[row], embed_articles(pair, [fresh], replayed)[0], rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(corpus.overlay(pair).side_vectors[row], embed_articles(pair, [fresh], at_export)[0])
    # A replica (or a newly loaded model) building its overlay from the stored records: the same clock.
    replica = LiveCorpus(corpus.log, ListingClock("events"))
    replica.clock.observe([LiveView("u1", ids[0], replayed, "k")])
    replica.sync()
    on_replica = replica.overlay(pair)
    np.testing.assert_allclose(
        on_replica.side_vectors[on_replica.side_row_of["fresh-1"]],
        embed_articles(pair, [fresh], replayed)[0],
        rtol=1e-5,
        atol=1e-6,
    )
    assert corpus.refresh_ages(pair) == len(ids)  # the model's rows, 40 replayed days later
    assert ListingClock().now_ms(pair) is None  # the default: the wall clock
