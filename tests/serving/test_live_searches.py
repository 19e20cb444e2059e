"""Searches in serving over real HTTP: the snapshot's recent queries, POSTed search events
(embedded and Redis stores), and users with searches but no views, against numpy answers."""

from __future__ import annotations

import numpy as np
import pytest
from live_http import LATER, ids_of, running_service, view

from homefeed import features, tokens
from homefeed.layout import extract_dir as extract_layout
from serving.http.settings import ServiceSettings
from serving.live.events import EmbeddedLiveViews, apply_views, merge_history, parse_item, parse_items
from serving.live.searches import LiveSearch
from serving.store import load_histories_to_redis
from tests.support import model_factory

DIM = 16
SNAPSHOT_QUERIES = {"u0003": ["Baby Stroller", "유모차"], "s0001": ["ＲＥＤ Bike!"]}  # s0001: no views


def search(user, query, when=LATER, **extra):
    return {"type": "search", "user_id": user, "query": query, "searched_at": when, **extra}


@pytest.fixture(scope="module")
def searching(tmp_path_factory):
    root = tmp_path_factory.mktemp("searching")
    table = model_factory.save_searching_model(root / "saved", DIM, seed=5)
    model = model_factory.make_model_dir(root / "model", root / "saved", table, version="q1", seed=5)
    model_factory.add_searches(model, SNAPSHOT_QUERIES, "q1")
    from components.build_index.build import build_model_index
    from homefeed.config import IndexConfig

    build_model_index(model, IndexConfig())
    return model, table


def expected(model, table, history, queries, k):
    """Brute force: the normalised mean of the hashed history ids and normalised queries."""
    import tensorflow as tf

    ids = (model / "article_ids.txt").read_text().split()
    vectors = np.load(model / "article_vectors.npy")
    keys = list(history) + [tokens.normalise(q) for q in queries]
    user = table[tf.strings.to_hash_bucket_fast(tf.constant(keys), model_factory.NUM_BUCKETS).numpy()].mean(axis=0)
    order = np.argsort(-(vectors @ (user / np.linalg.norm(user))), kind="stable")
    return [ids[i] for i in order if ids[i] not in set(history)][:k]


def history_of(model, user):
    import pandas as pd

    frame = pd.read_parquet(model / extract_layout.USER_HISTORIES_FILE).set_index(features.USER_ID)
    return list(frame.loc[user, features.HISTORY]) if user in frame.index else []


def test_search_items_are_parsed_checked_and_kept_apart_from_views():
    ok = parse_item(search("u1", "  Baby stroller  ", event_id="e1"), lambda a: False)
    assert isinstance(ok, LiveSearch) and ok.query == "Baby stroller" and ok.key == "id:e1"
    assert len(parse_item(search("u1", "x" * 900), None).query) == features.QUERY_MAX_CHARS
    _, rejected = parse_items(
        [
            search("u1", "   "),
            search("u1", 3),
            search("u1", "a", when="2999-01-01T00:00:00Z"),
            search("u1", "a", article_id="a1"),
            search("bad user!", "a"),
            search("u1", "a", when="yesterday"),
        ],
        None,
    )
    reasons = [r["reason"] for r in rejected]
    assert [r["index"] for r in rejected] == list(range(6))
    for reason, words in zip(reasons, ["blank", "string", "future", "unknown field", "user_id", "searched_at"]):
        assert words in reason, reasons
    # Stored beside views: capped separately (H views, SEARCH_LENGTH searches), idempotent.
    items = [parse_item(search("u1", f"q{i}", f"2024-07-01T10:{i:02d}:00Z"), None) for i in range(30)]
    items += [parse_item(view("u1", f"a{i}", f"2024-07-01T11:{i:02d}:00Z"), None) for i in range(5)]
    merged, added = apply_views([], items + items[:3], cap=3)
    assert added == 35
    row = merge_history(None, merged, None, 3)
    assert row[features.HISTORY] == ["a4", "a3", "a2"]
    assert row[features.RECENT_QUERIES] == [f"q{i}" for i in range(29, 29 - features.SEARCH_LENGTH, -1)]
    store = EmbeddedLiveViews(cap=3)
    assert store.add(items) == 35 and store.add(items[25:30] + items[-3:]) == 0  # kept ones: duplicates


def test_snapshot_searches_personalise_users_with_and_without_views(searching):
    model, table = searching
    with running_service(ServiceSettings(model=model)) as client:
        body = client.get("/v1/users/s0001/candidates", params={"k": 10}).json()
        assert body["fallback"] is False, body
        assert ids_of(client.get("/v1/users/s0001/candidates", params={"k": 10})) == expected(
            model, table, [], ["ＲＥＤ Bike!"], 10
        )
        u3 = history_of(model, "u0003")
        assert ids_of(client.get("/v1/users/u0003/candidates", params={"k": 10})) == expected(
            model, table, u3, SNAPSHOT_QUERIES["u0003"], 10
        )
        # Nobody: still the fallback.
        assert client.get("/v1/users/nobody/candidates", params={"k": 5}).json()["fallback"] is True


def test_a_posted_search_changes_the_next_answer(searching):
    model, table = searching
    with running_service(ServiceSettings(model=model)) as client:
        answer = client.post(
            "/v1/events",
            json={"events": [search("new1", "Wooden desk"), search("new1", "Wooden desk"), search("new1", "")]},
        )
        assert answer.status_code == 200
        assert answer.json()["accepted"] == 2 and answer.json()["applied"] == 1 and len(answer.json()["rejected"]) == 1
        got = client.get("/v1/users/new1/candidates", params={"k": 10}).json()
        assert got["fallback"] is False
        assert [c["article_id"] for c in got["candidates"]] == expected(model, table, [], ["Wooden desk"], 10)
        # Views and searches in one batch; the search goes in front of the snapshot's queries.
        u3 = history_of(model, "u0003")
        new_view = model_factory.article_ids(400)[399]
        client.post("/v1/events", json={"events": [search("u0003", "lamp"), view("u0003", new_view)]})
        assert ids_of(client.get("/v1/users/u0003/candidates", params={"k": 10})) == expected(
            model, table, [new_view, *u3][: features.HISTORY_LENGTH], ["lamp", *SNAPSHOT_QUERIES["u0003"]], 10
        )


@pytest.mark.redis
def test_redis_store_carries_snapshot_and_live_searches(searching, redis_url):
    model, table = searching
    prefix = "searches-test:"
    load_histories_to_redis(model / extract_layout.USER_HISTORIES_FILE, redis_url, prefix=prefix)
    settings = dict(
        model=model, redis_url=redis_url, redis_prefix=prefix, redis_timeout_s=2.0, live_sync_interval_s=0.1
    )
    with running_service(ServiceSettings(**settings)) as one, running_service(ServiceSettings(**settings)) as two:
        assert ids_of(one.get("/v1/users/s0001/candidates", params={"k": 10})) == expected(
            model, table, [], ["ＲＥＤ Bike!"], 10
        )
        assert one.post("/v1/events", json={"events": [search("s0001", "sofa")]}).json()["applied"] == 1
        # The other replica sees it: the live list is in Redis.
        assert ids_of(two.get("/v1/users/s0001/candidates", params={"k": 10})) == expected(
            model, table, [], ["sofa", "ＲＥＤ Bike!"], 10
        )


def test_search_items_are_documented(searching):
    model, _ = searching
    with running_service(ServiceSettings(model=model)) as client:
        paths = client.get("/openapi.json").json()["paths"]
    items = paths["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["events"][
        "items"
    ]
    kinds = {tuple(option["properties"]["type"]["enum"]) for option in items["oneOf"]}
    assert kinds == {("view",), ("search",)}
