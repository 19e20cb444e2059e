"""The live corpus without HTTP: which records a model applies, vectors from its article tower,
tombstones, and the Redis change log replicas read."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from components.build_index.build import build_model_index
from homefeed.config import IndexConfig
from serving.live.articles import (
    ArticleError,
    ArticleRecord,
    EmbeddedArticleLog,
    RedisArticleLog,
    parse_article,
    removal,
)
from serving.live.corpus import LiveCorpus
from serving.live.items import parse_timestamp
from serving.live.overlay import build_overlay
from serving.versions.pair import load_model_pair
from tests.support import model_factory

CUT = parse_timestamp("2025-01-01T00:00:00Z")  # the newer model's as_of


@pytest.fixture(scope="module")
def pairs(saved_models, tmp_path_factory):
    """(old, new): the old model's as_of is its snapshot's (2024-06-01), the new one's is CUT."""
    path, table = saved_models[0]
    made = []
    for version, as_of in (("old", None), ("new", "2025-01-01T00:00:00Z")):
        target = tmp_path_factory.mktemp("corpus") / version
        model_factory.make_model_dir(target, path, table, version=version)
        if as_of:
            (target / "extract_summary.json").write_text(json.dumps({"as_of": as_of}))
            model_factory.write_manifest(target, version)
        build_model_index(target, IndexConfig())
        made.append(load_model_pair(target))
    return made, table


def record(article_id, when, **fields):
    return dataclasses.replace(parse_article(article_id, fields), updated_ms=parse_timestamp(when))


def test_a_newer_model_keeps_only_the_live_records_after_its_as_of(pairs):
    (old, new), table = pairs
    records = {
        "a000004": record("a000004", "2024-12-01T00:00:00Z", status="sold"),
        "n-before": record("n-before", "2024-12-01T00:00:00Z", region="north"),
        "n-after": record("n-after", "2025-02-01T00:00:00Z", region="south", category="toys"),
        "a000006": record("a000006", "2025-02-01T00:00:00Z", status="deleted"),
    }
    on_old, on_new = build_overlay(old, records), build_overlay(new, records)
    assert on_old.side_ids == ["n-before", "n-after"] and on_old.dead_rows.tolist() == [4, 6]
    assert on_new.side_ids == ["n-after"] and on_new.dead_rows.tolist() == [6]
    expected = model_factory.article_vectors_for(["n-before", "n-after"], table)
    np.testing.assert_allclose(on_old.side_vectors, expected, rtol=1e-5, atol=1e-6)  # the article tower's vectors
    assert on_new.attributes("n-after") == ("toys", "south") and on_new.attributes("a000001") == ("books", "south")
    assert on_new.is_known("n-after") and not on_new.is_known("nowhere")
    assert on_old.article_id(old.n_articles + 1) == "n-after"


def test_removals_still_apply_when_the_model_cannot_embed(pairs):
    (old, _), _ = pairs

    class NoTower:
        def encode(self, rows):  # pragma: no cover - not called here
            raise AssertionError

    blind = dataclasses.replace(old, encoder=NoTower())
    overlay = build_overlay(
        blind,
        {
            "a000002": record("a000002", "2025-02-01T00:00:00Z", status="sold"),
            "n-1": record("n-1", "2025-02-01T00:00:00Z"),
        },
    )
    assert overlay.dead_rows.tolist() == [2] and overlay.side_ids == []
    with pytest.raises(ValueError, match="article_vectors"):
        LiveCorpus(EmbeddedArticleLog()).upsert([record("n-2", "2025-02-01T00:00:00Z")], blind)


def test_own_writes_read_back_from_the_log_are_not_applied_again(pairs):
    (old, _), _ = pairs
    corpus = LiveCorpus(EmbeddedArticleLog())
    corpus.upsert([record("n-own", "2025-02-01T00:00:00Z", region="north")], old)
    before = corpus.overlay(old)
    assert corpus.sync(old) == 0 and corpus.overlay(old) is before  # no new overlay built
    newer = record("n-own", "2025-02-02T00:00:00Z", status="sold")
    corpus.log.put([newer])  # another writer of the same log
    assert corpus.sync(old) == 1 and corpus.records["n-own"] == newer and corpus.overlay(old) is not before


def test_article_bodies_are_checked_field_by_field():
    with pytest.raises(ArticleError) as caught:
        parse_article("x", {"status": "gone", "created_at": "2024-13-01T00:00:00Z", "colour": "red"})
    assert {d["where"] for d in caught.value.details} == {"body", "body.status", "body.created_at"}
    assert parse_article("x", {}).status == "active"


def test_a_sold_or_deleted_listing_records_when_it_was_removed():
    when = parse_timestamp("2026-05-01T12:00:00Z")
    sold = parse_article("x", {"status": "sold", "title": "Desk"}, now_ms=when)
    assert sold.removed_at == "2026-05-01T12:00:00.000Z" and parse_timestamp(sold.removed_at) == when
    assert ArticleRecord.from_json(sold.to_json()) == sold  # kept through Redis too
    assert parse_article("x", {"status": "active"}, now_ms=when).removed_at is None
    assert removal("x", now_ms=when + 5).removed_at == "2026-05-01T12:00:00.005Z"


@pytest.mark.redis
def test_redis_change_log_brings_every_replica_the_same_records(redis_url):
    one, two = LiveCorpus(RedisArticleLog(redis_url, "cl:")), LiveCorpus(RedisArticleLog(redis_url, "cl:"))
    one.upsert([record("n1", "2025-02-01T00:00:00Z", region="north"), record("n2", "2025-02-01T00:00:00Z")])
    one.upsert([record("n1", "2025-02-02T00:00:00Z", status="sold")])
    assert two.sync() == 2 and two.records == one.records and two.records["n1"].status == "sold"
    assert two.sync() == 0  # nothing new
    # A replica's own writes come back from the log: they are not news (no second refresh).
    assert one.sync() == 0
    two.upsert([record("n3", "2025-02-03T00:00:00Z")])
    assert two.sync() == 0 and one.sync() == 1 and one.records == two.records
    late = LiveCorpus(RedisArticleLog(redis_url, "cl:"))  # a restarted replica
    late.sync()
    assert late.records == one.records
    assert ArticleRecord.from_json(one.records["n2"].to_json()) == one.records["n2"]


def test_changes_apply_incrementally_and_published_overlays_stay_as_they_were(pairs):
    (old, _), table = pairs
    corpus = LiveCorpus(EmbeddedArticleLog())
    corpus.upsert([record("m-0", "2025-02-01T00:00:00Z", region="north")], old)
    first = corpus.overlay(old)
    corpus.upsert(
        [record(f"m-{i}", "2025-02-01T00:00:00Z", region="south") for i in range(1, 100)], old
    )  # past the buffer
    corpus.upsert([record("m-0", "2025-02-02T00:00:00Z", region="south")], old)  # moves to a new slot
    corpus.upsert([record("m-5", "2025-02-02T00:00:00Z", status="sold")], old)
    now = corpus.overlay(old)
    assert first.n_side == 1 and first.side_alive.tolist() == [True] and first.side_region_code == {"north": 0}
    # The earlier overlay shares the builder's maps but still answers as published: m-0 is in its
    # slot 0 there (it has moved since), and a user who saw m-0 does not get it from that overlay.
    assert first.side_allowed(None, seen=()).tolist() == [True]
    assert first.side_allowed(None, seen=["m-0"]).tolist() == [False]
    assert first.side_allowed({"north"}, seen=["m-42"]).tolist() == [True]  # a slot past its m is ignored
    assert now.n_side == 101 and int(now.side_alive.sum()) == 99
    south = now.side_allowed({"south"}, seen=["m-7"])
    alive_south = {now.side_ids[j] for j in np.flatnonzero(south)}
    assert alive_south == {f"m-{i}" for i in range(100)} - {"m-5", "m-7"}
    assert not now.side_allowed({"north"}, seen=()).any()
    np.testing.assert_allclose(
        now.side_vectors[now.side_row_of["m-42"]],
        model_factory.article_vectors_for(["m-42"], table)[0],
        rtol=1e-5,
        atol=1e-6,
    )


def test_embedded_log_changes_since_are_the_newer_changes_oldest_first():
    log = EmbeddedArticleLog()
    a, b, c = (record(i, "2025-02-01T00:00:00Z", region="north") for i in ("a", "b", "c"))
    assert log.put([a, b]) == 2 and log.put([c]) == 3
    a2 = dataclasses.replace(a, region="south")
    assert log.put([a2]) == 4  # a changed again: now the newest
    reference = {1: [b, c, a2], 2: [c, a2], 3: [a2], 4: []}  # each id's latest state, by its last seq
    assert log.changes_since(0) == ([b, c, a2], 4)
    for seq, expected in reference.items():
        assert log.changes_since(seq) == (expected, 4)
