"""Live state is bounded by configuration, and a corrupt stored record is skipped, counted, logged once."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import redis
from live_http import running_service
from prometheus_client import generate_latest

from serving.http.app import create_app
from serving.http.settings import ServiceSettings
from serving.live.articles import EmbeddedArticleLog, RedisArticleLog, parse_article
from serving.live.corpus import LiveCorpus
from serving.live.events import EmbeddedLiveViews, LiveView
from serving.live.items import parse_timestamp
from serving.live.overlay import COMPACT_MIN_SLOTS
from serving.store import CORRUPT_RECORDS
from serving.versions.pair import load_model_pair
from tests.support import model_factory


@pytest.fixture(scope="module")
def model(make_model):
    return make_model("live-bounds")


def record(article_id, when, **fields):
    return dataclasses.replace(parse_article(article_id, fields), updated_ms=parse_timestamp(when) + 1)


def test_updates_of_one_listing_hold_one_slot_after_compaction(model, saved_models):
    pair = load_model_pair(model)
    corpus = LiveCorpus(EmbeddedArticleLog())
    corpus.upsert([record("keep", "2025-01-01T00:00:00Z", region="north")], pair)
    early = corpus.overlay(pair)
    for i in range(500):
        corpus.upsert([record("hot", "2025-01-01T00:00:00Z", title=f"t{i}", region="south")], pair)
    now = corpus.overlay(pair)
    assert now.n_side <= COMPACT_MIN_SLOTS, "dead slots are compacted"
    assert int(now.side_alive.sum()) == 2 and now.records["hot"].title == "t499"
    assert {now.side_ids[j] for j in np.flatnonzero(now.side_allowed(None, seen=["keep"]))} == {"hot"}
    np.testing.assert_allclose(
        now.side_vectors[now.side_row_of["hot"]],
        model_factory.article_vectors_for(["hot"], saved_models[0][1])[0],
        rtol=1e-5,
        atol=1e-6,
    )
    assert early.n_side == 1 and early.side_allowed(None, seen=()).tolist() == [True], "published stays as it was"


def test_in_process_live_views_forget_the_least_recently_written_user_at_the_cap():
    views = EmbeddedLiveViews(cap=3, max_users=3)
    for u in range(10):
        views.add([LiveView(f"u{u}", "a1", 1000 + i, f"k{i}") for i in range(5)])
    views.add([LiveView("u7", "a2", 5000, "new")])  # u7 written last now
    views.add([LiveView("u10", "a2", 5000, "new")])
    assert views.get("u7") and views.get("u10") and views.get("u9") and not views.get("u8")
    assert len(views._views) == 3 and views.evicted == 8
    assert all(len(views.get(u)) <= 3 for u in ("u7", "u9", "u10"))


@pytest.mark.redis
def test_a_corrupt_listing_in_redis_is_skipped_counted_logged_once_and_sync_goes_on(redis_url, caplog):
    client = redis.Redis.from_url(redis_url)
    log = RedisArticleLog(redis_url, "corrupt:")
    log.put([record("good-1", "2025-01-01T00:00:00Z")])
    for bad_id, bad in (
        ("bad-1", b"not json"),
        ("bad-2", b'{"article_id": 5}'),
        ("bad-3", b'{"article_id": "x", "updated_ms": "y"}'),
    ):
        client.hset(log.hash_key, bad_id, bad)
        client.zadd(log.log_key, {bad_id: client.incr(log.seq_key)})
    before = dict(CORRUPT_RECORDS)
    caplog.set_level(logging.WARNING)
    corpus = LiveCorpus(RedisArticleLog(redis_url, "corrupt:"))
    assert corpus.sync() == 1 and set(corpus.records) == {"good-1"}
    log.put([record("good-2", "2025-01-02T00:00:00Z")])
    log.put([record("bad-1", "2025-01-02T00:00:00Z")])  # a writer repairs it: applied
    assert corpus.sync() == 2 and set(corpus.records) == {"good-1", "good-2", "bad-1"}
    assert CORRUPT_RECORDS[log.hash_key] - before.get(log.hash_key, 0) == 3
    restarted = LiveCorpus(RedisArticleLog(redis_url, "corrupt:"))
    restarted.sync()
    assert set(restarted.records) == {"good-1", "good-2", "bad-1"}
    lines = [r for r in caplog.records if "unreadable record" in r.getMessage()]
    assert len(lines) == 3, "each corrupt key is logged once, also by a second reader in this process"
    exported = generate_latest(create_app().state.metrics.registry).decode()
    assert f'candidates_corrupt_records_total{{store="{log.hash_key}"}}' in exported


def test_new_listings_beyond_the_cap_are_refused_per_item_and_with_507(model):
    settings = ServiceSettings(model=model, live_max_listings=2)
    with running_service(settings) as service:
        answer = service.post(
            "/v1/articles", json={"articles": [{"article_id": f"cap-{i}", "title": "bike"} for i in range(3)]}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["accepted"] == 2 and [r["index"] for r in body["rejected"]] == [2]
        assert "live_max_listings" in body["rejected"][0]["reason"]
        full = service.put("/v1/articles/cap-9", json={"title": "bike"})
        assert full.status_code == 507 and full.headers["content-type"] == "application/json", full.text
        assert service.put("/v1/articles/cap-0", json={"title": "a change"}).status_code == 200, "known ones change"
        assert service.put("/v1/articles/a000001", json={"title": "a model listing"}).status_code == 507


def test_a_reload_prepares_the_next_models_overlay_and_its_first_request_only_applies_later_changes(model):
    served, loaded = load_model_pair(model), load_model_pair(model)
    corpus = LiveCorpus(EmbeddedArticleLog())
    corpus.upsert([record(f"p-{i}", "2025-01-01T00:00:00Z", region="north") for i in range(100)], served)
    corpus.prepare(loaded)  # on the reload thread, before the swap
    assert corpus.overlay(served).pair is served, "the served model's overlay is untouched"
    corpus.upsert(
        [record("p-late", "2025-01-02T00:00:00Z"), record("p-3", "2025-01-02T00:00:00Z", status="sold")], served
    )
    prepared = corpus._prepared
    first = corpus.overlay(loaded)  # the swap happened: the first request of the new model
    assert corpus._builder is prepared, "adopted, not rebuilt from every record"
    assert first.is_known("p-late") and "p-3" not in first.side_row_of and "p-7" in first.side_row_of
    assert int(first.side_alive.sum()) == 100
