"""A small but real model directory (serving, publish, fault and deploy tests), built in seconds without training.

The SavedModel has the exact serving signature of docs/architecture.md (MODEL_DIR): `history`,
`history_category`, `history_region` `tf.string [batch, None]` right-padded with "", and
`example_age_days` `tf.float32 [batch]` -> `{"user_vector": float32 [batch, d]}`, and the
`article_vectors` signature (`label`, `label_category`, `label_region` -> `article_vector`). Inside, each
article id is hashed into a bucket of a fixed random embedding table and the user vector is the
L2-normalised masked mean of the history's embeddings, so padding never changes the vector.

The article vectors are the same table rows (normalised), so a user's nearest articles are those
similar to what they viewed, and the tests can recompute every expected answer with numpy.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from homefeed import features
from homefeed.layout import extract_dir as extract_layout

NUM_BUCKETS = 1 << 16
CATEGORIES = ("bikes", "books", "toys", "sofas")
REGIONS = ("north", "south")


def article_ids(n: int) -> list[str]:
    return [f"a{i:06d}" for i in range(n)]


def _table_model(table: np.ndarray):
    """The `tf.Module` base both test models share: the embedding table, the masked mean of hashed
    ids, and the article tower (the id's row of the table, normalised: what article_vectors_for gives)."""
    import tensorflow as tf

    class TableModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.table = tf.Variable(table, trainable=False)

        def user_vector(self, ids, example_age_days):
            """L2-normalised mean of the non-empty ids' rows `[batch, d]`; padding never changes it."""
            buckets = tf.strings.to_hash_bucket_fast(ids, NUM_BUCKETS)
            mask = tf.cast(tf.not_equal(ids, ""), tf.float32)[..., tf.newaxis]
            summed = tf.reduce_sum(tf.gather(self.table, buckets) * mask, axis=1)
            mean = summed / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
            mean += 0.0 * example_age_days[:, tf.newaxis]  # consumed, like the real model does
            return {"user_vector": tf.math.l2_normalize(mean, axis=-1)}

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string, name=features.LABEL),
                tf.TensorSpec([None], tf.string, name=features.label_attribute("category")),
                tf.TensorSpec([None], tf.string, name=features.label_attribute("region")),
            ]
        )
        def article_vectors(self, label, label_category, label_region):
            del label_category, label_region
            vectors = tf.gather(self.table, tf.strings.to_hash_bucket_fast(label, NUM_BUCKETS))
            return {"article_vector": tf.math.l2_normalize(vectors, axis=-1)}

        def save(self, path: Path) -> None:
            tf.saved_model.save(
                self, str(path), signatures={"serving_default": self.serve, "article_vectors": self.article_vectors}
            )

    return TableModel


def save_hashing_model(path: Path, dim: int, seed: int) -> np.ndarray:
    """Writes the SavedModel to `path`; returns its embedding table `[NUM_BUCKETS, dim]`."""
    import tensorflow as tf

    table = np.random.default_rng(seed).normal(size=(NUM_BUCKETS, dim)).astype(np.float32)

    class HashingUserModel(_table_model(table)):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None], tf.string, name=features.HISTORY),
                tf.TensorSpec([None, None], tf.string, name=features.history_attribute("category")),
                tf.TensorSpec([None, None], tf.string, name=features.history_attribute("region")),
                tf.TensorSpec([None], tf.float32, name=features.EXAMPLE_AGE),
            ]
        )
        def serve(self, history, history_category, history_region, example_age_days):
            del history_category, history_region  # same signature as the real model; unused here
            return self.user_vector(history, example_age_days)

    HashingUserModel().save(path)
    return table


def article_vectors_for(ids: list[str], table: np.ndarray) -> np.ndarray:
    """The vectors the hashing model gives each article on its own: `float32 [len(ids), dim]`."""
    import tensorflow as tf

    buckets = tf.strings.to_hash_bucket_fast(tf.constant(ids), NUM_BUCKETS).numpy()
    vectors = table[buckets]
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def histories_frame(ids: list[str], n_users: int, seed: int, empty_users: int = 1) -> pd.DataFrame:
    """User histories (features.USER_HISTORY_COLUMNS); the last `empty_users` have none."""
    rng = np.random.default_rng(seed + 1)
    rows = []
    for u in range(n_users):
        length = 0 if u >= n_users - empty_users else int(rng.integers(1, 12))
        history = [ids[i] for i in rng.choice(len(ids), size=length, replace=False)]
        rows.append(
            {
                features.USER_ID: f"u{u:04d}",
                features.HISTORY: history,
                features.history_attribute("category"): [CATEGORIES[int(a[1:]) % 4] for a in history],
                features.history_attribute("region"): [REGIONS[int(a[1:]) % 2] for a in history],
                "last_viewed_at": pd.Timestamp("2024-06-01", tz="UTC"),
            }
        )
    return pd.DataFrame(rows)


def write_histories(frame: pd.DataFrame, path: Path) -> Path:
    schema = pa.schema(
        [
            (features.USER_ID, pa.string()),
            (features.HISTORY, pa.list_(pa.string())),
            (features.history_attribute("category"), pa.list_(pa.string())),
            (features.history_attribute("region"), pa.list_(pa.string())),
            ("last_viewed_at", pa.timestamp("us", tz="UTC")),
        ]
    )
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), path)
    return path


def make_model_dir(
    target: Path,
    saved_model: Path,
    table: np.ndarray,
    *,
    version: str,
    n_articles: int = 400,
    n_users: int = 40,
    seed: int = 0,
    with_histories: bool = True,
    with_titles: bool = True,
) -> Path:
    """A finished model directory at `target` (manifest written last), no index yet.

    `saved_model`/`table` come from `save_hashing_model`; the SavedModel is copied, so one saved
    model serves many test directories.
    """
    target.mkdir(parents=True)
    shutil.copytree(saved_model, target / "saved_model")
    ids = article_ids(n_articles)
    vectors = article_vectors_for(ids, table)
    np.save(target / "article_vectors.npy", vectors)
    (target / "article_ids.txt").write_text("".join(f"{a}\n" for a in ids))
    corpus = pd.DataFrame(
        {
            "article_id": ids,
            "title": [f"Listing {i}" for i in range(n_articles)] if with_titles else [None] * n_articles,
            "category": [CATEGORIES[i % 4] for i in range(n_articles)],
            "region": [REGIONS[i % 2] for i in range(n_articles)],
            "view_count": [(n_articles - i) % 37 for i in range(n_articles)],
        }
    )
    corpus.to_parquet(target / "articles.parquet", index=False)
    popular = corpus.sort_values(["view_count", "article_id"], ascending=[False, True]).head(50)
    (target / "popular_articles.json").write_text(
        json.dumps(
            {"articles": [{"article_id": a, "count": int(c)} for a, c in zip(popular.article_id, popular.view_count)]}
        )
    )
    if with_histories:
        write_histories(histories_frame(ids, n_users, seed), target / extract_layout.USER_HISTORIES_FILE)
    write_manifest(target, version)
    return target


def write_manifest(target: Path, version: str) -> dict:
    """`manifest.json` as the trainer writes it (trainer/training/export.py): format 1, a file table, last.

    Call again after changing files on purpose, to make a consistent (but different) model.
    """
    from homefeed.layout import model_dir as layout

    files = {
        path.relative_to(target).as_posix(): {"bytes": path.stat().st_size, "sha256": sha256_of(path)}
        for path in sorted(target.rglob("*"))
        if path.is_file() and path.name != "manifest.json" and "index" not in path.relative_to(target).parts
    }
    manifest = {
        "format_version": layout.FORMAT_VERSION,
        "model_version": version,
        "embedding_dim": int(np.load(target / "article_vectors.npy", mmap_mode="r").shape[1]),
        "num_articles": len((target / "article_ids.txt").read_text().split()),
        "article_vectors_sha256": files["article_vectors.npy"]["sha256"],
        "files": files,
    }
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def expected_candidates(model_dir: Path, table: np.ndarray, history: list[str], k: int, exclude_seen: bool = True):
    """The right answer, recomputed with numpy: `[(article_id, score)]` best first.

    The user vector is the normalised mean of the history's hashed embeddings, exactly what the
    SavedModel computes, but without calling it.
    """
    import tensorflow as tf

    ids = (model_dir / "article_ids.txt").read_text().split()
    vectors = np.load(model_dir / "article_vectors.npy")
    buckets = tf.strings.to_hash_bucket_fast(tf.constant(history), NUM_BUCKETS).numpy()
    user = table[buckets].mean(axis=0)
    user /= np.linalg.norm(user)
    scores = vectors @ user
    order = np.argsort(-scores, kind="stable")
    seen = set(history) if exclude_seen else set()
    return [(ids[i], float(scores[i])) for i in order if ids[i] not in seen][:k]


def save_searching_model(path: Path, dim: int, seed: int) -> np.ndarray:
    """Like `save_hashing_model`, but the signature also takes `recent_queries` (as the real model
    trained with searches does) and the user vector is the normalised mean of the hashed history
    ids and hashed (already normalised) queries together. Returns the embedding table."""
    import tensorflow as tf

    table = np.random.default_rng(seed).normal(size=(NUM_BUCKETS, dim)).astype(np.float32)

    class SearchingUserModel(_table_model(table)):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None], tf.string, name=features.HISTORY),
                tf.TensorSpec([None, None], tf.string, name=features.history_attribute("category")),
                tf.TensorSpec([None, None], tf.string, name=features.history_attribute("region")),
                tf.TensorSpec([None, None], tf.string, name=features.RECENT_QUERIES),
                tf.TensorSpec([None], tf.float32, name=features.EXAMPLE_AGE),
            ]
        )
        def serve(self, history, history_category, history_region, recent_queries, example_age_days):
            del history_category, history_region
            return self.user_vector(tf.concat([history, recent_queries], axis=1), example_age_days)

    SearchingUserModel().save(path)
    return table


def add_searches(model_dir: Path, queries: dict[str, list[str]], version: str) -> None:
    """Adds `recent_queries` to the model's snapshot (users not in it get an empty history) and
    marks the manifest `uses_searches`, as the trainer does for a model trained with searches."""
    path = model_dir / extract_layout.USER_HISTORIES_FILE
    frame = pd.read_parquet(path)
    frame[features.RECENT_QUERIES] = [queries.get(u, []) for u in frame[features.USER_ID]]
    extra = [u for u in queries if u not in set(frame[features.USER_ID])]
    if extra:
        frame = pd.concat(
            [
                frame,
                pd.DataFrame(
                    {
                        features.USER_ID: extra,
                        features.HISTORY: [[] for _ in extra],
                        features.history_attribute("category"): [[] for _ in extra],
                        features.history_attribute("region"): [[] for _ in extra],
                        "last_viewed_at": pd.Series([pd.NaT] * len(extra), dtype="datetime64[us, UTC]"),
                        features.RECENT_QUERIES: [queries[u] for u in extra],
                    }
                ),
            ],
            ignore_index=True,
        )
    frame.to_parquet(path, index=False)
    manifest = write_manifest(model_dir, version)
    manifest["uses_searches"] = True
    (model_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
