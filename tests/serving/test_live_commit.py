"""Group commit of listing upserts (serving/live/commit.py): batched embedding gives each listing
the vector it gets alone, concurrent writers are committed together and each sees its change,
and a writer whose listings cannot be embedded fails alone."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest

from components.build_index.build import build_model_index
from homefeed.config import IndexConfig
from serving.live.articles import EmbeddedArticleLog, parse_article
from serving.live.corpus import LiveCorpus
from serving.live.model import embed_articles
from serving.versions.pair import load_model_pair
from tests.support import model_factory


@pytest.fixture(scope="module")
def pair_and_table(saved_models, tmp_path_factory):
    path, table = saved_models[0]
    target = tmp_path_factory.mktemp("commit") / "m"
    model_factory.make_model_dir(target, path, table, version="m")
    build_model_index(target, IndexConfig())
    return load_model_pair(target), table


def listing(article_id, **fields):
    return dataclasses.replace(parse_article(article_id, fields), updated_ms=int(time.time() * 1000) + 10**9)


def test_one_batched_article_tower_call_gives_each_listing_its_own_vector(pair_and_table):
    pair, table = pair_and_table
    records = [
        listing(f"b-{i}", region=("north", "south", None)[i % 3], category=("toys", None)[i % 2]) for i in range(40)
    ]
    batched = embed_articles(pair, records)
    alone = np.stack([embed_articles(pair, [r])[0] for r in records])
    np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        batched[:3], model_factory.article_vectors_for(["b-0", "b-1", "b-2"], table), rtol=1e-5, atol=1e-5
    )


def wait_for_queue(corpus, n, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while len(corpus._commits._queue) < n:
        assert time.monotonic() < deadline, f"only {len(corpus._commits._queue)} of {n} writers queued"
        time.sleep(0.001)


def run_queued_behind_a_commit(corpus, write, calls) -> None:
    """Runs `write(*args)` for each of `calls` on its own thread while a commit is in progress, so
    every writer queues behind it; then lets the commit finish and waits for all of them."""
    corpus._commits._commit_lock.acquire()
    threads = [threading.Thread(target=write, args=args) for args in calls]
    for thread in threads:
        thread.start()
    wait_for_queue(corpus, len(threads))
    corpus._commits._commit_lock.release()
    for thread in threads:
        thread.join(timeout=60)


def test_writers_waiting_on_a_commit_are_committed_together_and_each_sees_its_listing(pair_and_table):
    pair, table = pair_and_table
    corpus = LiveCorpus(EmbeddedArticleLog())
    corpus.refresh(pair)
    seen = {}

    def write(i):
        corpus.upsert([listing(f"g-{i}", region="north"), listing(f"g-{i}-b", region="south")], pair)
        seen[i] = corpus.overlay(pair)  # read-your-write: the overlay holds this writer's change

    run_queued_behind_a_commit(corpus, write, [(i,) for i in range(5)])
    assert corpus._commits.stats == {"commits": 1, "changes": 5}  # one article-tower call, one log write
    for i, overlay in seen.items():
        assert {f"g-{i}", f"g-{i}-b"} <= set(overlay.side_row_of)
    overlay = corpus.overlay(pair)
    ids = [f"g-{i}" for i in range(5)] + [f"g-{i}-b" for i in range(5)]
    np.testing.assert_allclose(
        np.stack([overlay.side_vectors[overlay.side_row_of[a]] for a in ids]),
        model_factory.article_vectors_for(ids, table),
        rtol=1e-5,
        atol=1e-5,
    )
    assert set(corpus.log.changes_since(0)[0]) >= {corpus.records[a] for a in ids}


def test_a_writer_the_model_cannot_embed_fails_alone_and_nothing_of_it_is_stored(pair_and_table):
    pair, _ = pair_and_table

    class NoTower:
        def encode(self, rows):  # pragma: no cover - not called here
            raise AssertionError

    blind = dataclasses.replace(pair, encoder=NoTower())
    corpus = LiveCorpus(EmbeddedArticleLog())
    errors = {}

    def write(name, target, status="active"):
        try:
            corpus.upsert([listing(name, region="north", status=status)], target)
        except ValueError as error:
            errors[name] = error

    run_queued_behind_a_commit(corpus, write, [("x-1", blind), ("x-2", blind), ("x-3", blind, "sold")])
    assert sorted(errors) == ["x-1", "x-2"] and all("article_vectors" in str(e) for e in errors.values())
    assert sorted(corpus.records) == ["x-3"]  # the removal needs no vector and went through
    assert [r.article_id for r in corpus.log.changes_since(0)[0]] == ["x-3"]


def test_listings_embedded_beforehand_are_committed_with_those_vectors_and_no_tower_call(pair_and_table, monkeypatch):
    """`LiveCorpus.embed` then `upsert(..., vectors)` (a write in two steps, serving/http/live_routes.py)
    serves the vectors the tower gives alone; queued with a writer that did not embed, only that
    one is embedded in the commit."""
    from serving.live import commit as live_commit

    pair, table = pair_and_table
    corpus = LiveCorpus(EmbeddedArticleLog())
    corpus.refresh(pair)
    early = [listing("e-1", region="north"), listing("e-2", region="south", status="sold")]
    vectors = corpus.embed(early, pair)
    assert set(vectors) == {("e-1", early[0].attributes())}  # the sold one needs no vector
    embedded_in_commit = []
    real = live_commit.embed
    monkeypatch.setattr(
        live_commit,
        "embed",
        lambda p, records, *now: embedded_in_commit.append([r.article_id for r in records]) or real(p, records, *now),
    )

    def write(records, given):
        corpus.upsert(records, pair, given)

    run_queued_behind_a_commit(corpus, write, [(early, vectors), ([listing("late-1", region="north")], None)])
    assert embedded_in_commit == [["late-1"]]
    overlay = corpus.overlay(pair)
    assert "e-2" not in overlay.side_row_of and {"e-1", "late-1"} <= set(overlay.side_row_of)
    np.testing.assert_allclose(
        np.stack([overlay.side_vectors[overlay.side_row_of[a]] for a in ("e-1", "late-1")]),
        model_factory.article_vectors_for(["e-1", "late-1"], table),
        rtol=1e-5,
        atol=1e-5,
    )


def test_a_listing_embedded_for_a_model_no_longer_served_is_embedded_again_at_its_commit(pair_and_table):
    """The two steps of an upsert on the event loop (serving/http/live_routes.py `_store_async`) may
    straddle a model reload: vectors made for another pair are not stored, the served one embeds."""
    from types import SimpleNamespace

    from serving.http import live_routes as routes_live

    pair, table = pair_and_table
    corpus = LiveCorpus(EmbeddedArticleLog())
    corpus.refresh(pair)
    state = SimpleNamespace(live=SimpleNamespace(corpus=corpus), holder=SimpleNamespace(pair=pair))
    record = listing("r-1", region="north")
    reloaded_away = dataclasses.replace(pair)  # another pair object: what was served at the first step
    stale = (reloaded_away, {("r-1", record.attributes()): np.zeros(pair.index.d, np.float32)})
    assert routes_live._store(state, [record], stale) is None
    overlay = corpus.overlay(pair)
    np.testing.assert_allclose(
        overlay.side_vectors[overlay.side_row_of["r-1"]],
        model_factory.article_vectors_for(["r-1"], table)[0],
        rtol=1e-5,
        atol=1e-5,
    )
    fresh = listing("r-2", region="north")
    given = (pair, corpus.embed([fresh], pair))
    assert routes_live._store(state, [fresh], given) is None  # the served pair's vectors are used as given
    overlay = corpus.overlay(pair)
    np.testing.assert_allclose(overlay.side_vectors[overlay.side_row_of["r-2"]], given[1][("r-2", fresh.attributes())])
