"""Helpers of the live tests: a real HTTP service (uvicorn in a thread on a free loopback port,
tests/support/service.py), event items, and the brute-force reference answers recomputed with numpy."""

from __future__ import annotations

import numpy as np

from homefeed.layout import extract_dir as extract_layout
from tests.support import model_factory
from tests.support.service import running_app

running_service = running_app  # the live tests' name for it

LATER = "2024-07-01T12:00:00Z"  # after the snapshot's as_of (2024-06-01)


def user_vector(table, history):
    import tensorflow as tf

    buckets = tf.strings.to_hash_bucket_fast(tf.constant(history), model_factory.NUM_BUCKETS).numpy()
    vector = table[buckets].mean(axis=0)
    return vector / np.linalg.norm(vector)


def reference(model_dir, table, history, k, regions=None, removed=(), extra=None):
    """Brute force over corpus (+ `extra` {id: region}) minus seen/removed, filtered by region."""
    ids = (model_dir / "article_ids.txt").read_text().split()
    vectors = np.load(model_dir / "article_vectors.npy")
    region_of = {a: model_factory.REGIONS[i % 2] for i, a in enumerate(ids)}
    if extra:
        ids = ids + list(extra)
        vectors = np.concatenate([vectors, model_factory.article_vectors_for(list(extra), table)])
        region_of.update(extra)
    scores = vectors @ user_vector(table, history)
    order = np.argsort(-scores, kind="stable")
    out = [ids[i] for i in order if ids[i] not in set(history) and ids[i] not in set(removed)]
    if regions:
        out = [a for a in out if region_of[a] in regions]
    return out[:k]


def snapshot_history(model_dir, user_id):
    import pandas as pd

    frame = pd.read_parquet(model_dir / extract_layout.USER_HISTORIES_FILE)
    return list(frame.set_index("user_id").loc[user_id, "history"])


def ids_of(response):
    assert response.status_code == 200, response.text
    return [c["article_id"] for c in response.json()["candidates"]]


def view(user, article, when=LATER, **extra):
    return {"user_id": user, "article_id": article, "viewed_at": when, **extra}


def ids_of_body(body):
    return [c["article_id"] for c in body["candidates"]]
