"""History stores: the embedded snapshot and Redis (a real redis-server) answer the same."""

from __future__ import annotations

import pandas as pd
import pytest

from homefeed import features
from serving.store import (
    EmbeddedStore,
    RedisStore,
    StoreUnavailableError,
    load_histories_to_redis,
    read_histories,
)
from tests.support import model_factory
from tests.support.ports import free_port


@pytest.fixture
def snapshot(tmp_path):
    frame = model_factory.histories_frame(model_factory.article_ids(100), 30, seed=3, empty_users=2)
    return model_factory.write_histories(frame, tmp_path / "user_histories.parquet")


@pytest.mark.redis
def test_embedded_and_redis_stores_return_the_same_histories(snapshot, redis_url):
    embedded = EmbeddedStore.from_parquet(snapshot)
    progress = []
    written = load_histories_to_redis(snapshot, redis_url, prefix="t1:", batch_size=7, progress=progress.append)
    assert written == len(embedded) == 30
    assert progress[:4] == [7, 14, 21, 28] and progress[-1] == 30
    redis_store = RedisStore(redis_url, prefix="t1:")
    for user_id in embedded.user_ids():
        assert redis_store.get(user_id) == embedded.get(user_id), user_id
    assert redis_store.get("u0029") == {features.HISTORY: [], "history_category": [], "history_region": []}
    assert redis_store.get("nobody") is None and embedded.get("nobody") is None
    assert redis_store.snapshot_meta()["users"] == 30
    redis_store.close()


def test_rows_match_the_parquet_file(snapshot):
    frame = pd.read_parquet(snapshot)
    rows = dict(read_histories(snapshot, batch_size=4))
    assert list(rows) == list(frame.user_id)
    first = frame.iloc[0]
    assert rows[first.user_id][features.HISTORY] == list(first.history)
    assert rows[first.user_id]["history_region"] == list(first.history_region)


def test_missing_attribute_columns_and_bad_files(tmp_path):
    pd.DataFrame({"user_id": ["a"], "history": [["x", "y"]]}).to_parquet(tmp_path / "h.parquet")
    assert EmbeddedStore.from_parquet(tmp_path / "h.parquet").get("a") == {
        "history": ["x", "y"],
        "history_category": [],
        "history_region": [],
    }
    pd.DataFrame({"user": ["a"]}).to_parquet(tmp_path / "wrong.parquet")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['user_id', 'history'\]"):
        EmbeddedStore.from_parquet(tmp_path / "wrong.parquet")
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        EmbeddedStore.from_parquet(tmp_path / "text.parquet")
    with pytest.raises(FileNotFoundError, match="user histories"):
        EmbeddedStore.from_parquet(tmp_path / "missing.parquet")


def test_unreachable_redis_is_reported_not_crashed(snapshot):
    port = free_port()  # nothing listens there
    store = RedisStore(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(StoreUnavailableError, match="redis redis://127.0.0.1"):
        store.get("u0001")
    with pytest.raises(StoreUnavailableError, match="failed after 0 users"):
        load_histories_to_redis(snapshot, f"redis://127.0.0.1:{port}/0")


@pytest.mark.redis
def test_the_seen_set_travels_beside_the_history_in_both_stores(tmp_path, redis_url):
    """A snapshot's `seen` (every article viewed, beyond the H-long history) reaches the embedded
    and the Redis store alike; a stored value whose seen set is not a list of strings is refused."""
    from serving.store import decode_row, seen_set

    frame = model_factory.histories_frame(model_factory.article_ids(100), 5, seed=4, empty_users=0)
    frame[features.SEEN] = [[*h, *(f"old{u}-{i}" for i in range(70))] for u, h in enumerate(frame[features.HISTORY])]
    path = tmp_path / "user_histories.parquet"
    frame.drop(columns=["last_viewed_at"], errors="ignore").to_parquet(path, index=False)
    embedded = EmbeddedStore.from_parquet(path)
    load_histories_to_redis(path, redis_url, prefix="seen:")
    redis_store = RedisStore(redis_url, prefix="seen:")
    for user_id, seen in zip(frame[features.USER_ID], frame[features.SEEN]):
        assert embedded.get(user_id)[features.SEEN] == list(seen)
        assert redis_store.get(user_id) == embedded.get(user_id)
        assert seen_set(redis_store.get(user_id)) == set(seen) and len(seen_set(embedded.get(user_id))) >= 70
    redis_store.close()
    with pytest.raises(StoreUnavailableError, match="seen"):
        decode_row(b'{"history": [], "seen": [1, 2]}')
