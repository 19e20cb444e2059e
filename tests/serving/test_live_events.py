"""Live views without HTTP: parsing, idempotency, time order, the cap, and the snapshot merge."""

from __future__ import annotations

import pytest

from homefeed import features
from homefeed.layout import extract_dir as extract_layout
from serving.live.events import (
    EmbeddedLiveViews,
    RedisLiveViews,
    apply_views,
    merge_history,
    parse_item,
)
from serving.live.items import parse_timestamp

JULY = parse_timestamp("2024-07-01T00:00:00Z")


def views(*pairs, user="u1"):
    return [parse_item({"user_id": user, "article_id": a, "viewed_at": t}, None) for a, t in pairs]


def test_timestamps_are_rfc3339_with_an_offset():
    assert parse_timestamp("2024-07-01T02:00:00+02:00") == JULY == parse_timestamp("2024-07-01t00:00:00z")
    assert parse_timestamp("2024-07-01T00:00:00.250Z") == JULY + 250
    for bad in ("2024-07-01", "2024-07-01T00:00:00", "yesterday", "2024-02-30T00:00:00Z", 1719792000, None):
        with pytest.raises(ValueError, match="viewed_at"):
            parse_timestamp(bad)


def test_items_are_checked_one_by_one():
    with pytest.raises(ValueError, match="unknown article"):
        parse_item({"user_id": "u", "article_id": "x", "viewed_at": "2024-07-01T00:00:00Z"}, lambda a: False)
    with pytest.raises(ValueError, match="future"):
        parse_item({"user_id": "u", "article_id": "x", "viewed_at": "2999-01-01T00:00:00Z"}, None)
    with pytest.raises(ValueError, match="unknown field"):
        parse_item({"user_id": "u", "article_id": "x", "viewed_at": "2024-07-01T00:00:00Z", "query": "bike"}, None)
    with_id = parse_item(
        {"user_id": "u", "article_id": "x", "viewed_at": "2024-07-01T00:00:00Z", "event_id": "e1"}, None
    )
    assert with_id.key == "id:e1"


def test_the_same_event_twice_is_stored_once_and_late_ones_land_in_time_order():
    first, added = apply_views([], views(("a", "2024-07-01T10:00:00Z"), ("c", "2024-07-01T12:00:00Z")), cap=3)
    assert added == 2
    merged, added = apply_views(first, views(("b", "2024-07-01T11:00:00Z"), ("a", "2024-07-01T10:00:00Z")), cap=3)
    assert added == 1 and [e[1] for e in merged] == ["c", "b", "a"]
    merged, added = apply_views(merged, views(("z", "2024-06-01T00:00:00Z"), ("d", "2024-07-02T00:00:00Z")), cap=3)
    assert [e[1] for e in merged] == ["d", "c", "b"]  # capped at H, the oldest go first


def test_live_views_newer_than_the_snapshot_go_in_front_of_it():
    snapshot = {features.HISTORY: ["s1", "s2"], "history_category": ["x", "y"], "history_region": ["n", "s"]}
    live, _ = apply_views([], views(("new", "2024-07-02T00:00:00Z"), ("old", "2024-05-01T00:00:00Z")), cap=10)
    row = merge_history(snapshot, live, JULY, 3, lambda a: ("cat-" + a, "reg-" + a))
    assert row == {
        features.HISTORY: ["new", "s1", "s2"],
        "history_category": ["cat-new", "x", "y"],
        "history_region": ["reg-new", "n", "s"],
        features.SEEN: ["new", "s1", "s2"],
    }
    assert merge_history(None, live, JULY, 10)[features.HISTORY] == ["new", "old"]  # unknown to the snapshot
    assert merge_history(snapshot, [], JULY, 10) is snapshot and merge_history(None, [], JULY, 10) is None


@pytest.mark.redis
def test_embedded_and_redis_live_views_agree(redis_url):
    batch = views(("a", "2024-07-01T10:00:00Z"), ("b", "2024-07-01T09:00:00Z")) + views(
        ("c", "2024-07-01T08:00:00Z"), user="u2"
    )
    embedded, remote = EmbeddedLiveViews(cap=5), RedisLiveViews(redis_url, "lv:", cap=5)
    assert embedded.add(batch) == remote.add(batch) == 3
    assert embedded.add(batch) == remote.add(batch) == 0
    assert embedded.get("u1") == remote.get("u1") and embedded.get("u2") == remote.get("u2")
    assert remote.get("nobody") == [] and remote.key("u1") == "lv-live:u1"
    remote.close()


def test_a_reloaded_snapshot_keeps_only_the_live_views_after_its_as_of(tmp_path):
    import json

    from serving.live.state import LiveState
    from serving.store import EmbeddedStore
    from tests.support import model_factory

    path = model_factory.write_histories(
        model_factory.histories_frame(model_factory.article_ids(50), 3, seed=1), tmp_path / "h.parquet"
    )
    june = EmbeddedStore.from_parquet(path)  # as_of: the newest last_viewed_at
    assert june.as_of_ms == parse_timestamp("2024-06-01T00:00:00Z")
    (tmp_path / extract_layout.SUMMARY_FILE).write_text(json.dumps({"as_of": "2024-07-15T00:00:00Z"}))
    july = EmbeddedStore.from_parquet(path)  # a newer extract: its summary says when it was cut
    assert july.as_of_ms == parse_timestamp("2024-07-15T00:00:00Z")

    class Overlay:
        @staticmethod
        def attributes(article_id):
            return ("c", "r")

    live = EmbeddedLiveViews(cap=50)
    live.add(views(("seen-in-july", "2024-07-01T00:00:00Z"), ("after-both", "2024-08-01T00:00:00Z"), user="u0000"))
    state = LiveState(live, corpus=None, history_length=50)
    snapshot = june.get("u0000")[features.HISTORY]
    assert state.history(None, june, "u0000", Overlay)[features.HISTORY] == ["after-both", "seen-in-july", *snapshot]
    assert state.history(None, july, "u0000", Overlay)[features.HISTORY] == ["after-both", *snapshot]


def test_the_seen_set_keeps_every_earlier_view_not_only_the_history():
    """The snapshot's seen set reaches far beyond its H-long history; live views join it in front,
    each article once, and the service's filter (serving.store.seen_set) reads all of it."""
    from serving.store import seen_set

    older = [f"o{i}" for i in range(60)]
    snapshot = {
        features.HISTORY: ["s1", "s2"],
        "history_category": ["x", "y"],
        "history_region": ["n", "s"],
        features.SEEN: ["s1", "s2", *older],
    }
    live, _ = apply_views([], views(("new", "2024-07-02T00:00:00Z"), ("s1", "2024-07-03T00:00:00Z")), cap=10)
    row = merge_history(snapshot, live, JULY, 3, None)
    assert row[features.HISTORY] == ["s1", "new", "s1"]
    assert row[features.SEEN] == ["s1", "new", "s2", *older]
    assert seen_set(row) == {"s1", "s2", "new", *older}
    assert seen_set(snapshot) >= set(older) and seen_set(None) == set()
