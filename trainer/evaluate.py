"""Offline evaluation of a model directory on the eval split of an extract, against popularity.

Protocol (DEVELOPERS.md): each user's last view is the target (`split = eval` rows of
`training_examples.parquet`), its history the earlier views; candidates are the model's corpus
(`article_ids.txt`) minus everything the user viewed before the target (all their training views,
not only the at most H in the history column). The model is called through
`trainer.serving_model.UserEncoder` (raw strings into the exported SavedModel, as the service
does) and searched exactly over `article_vectors.npy`; the popularity baseline ranks the corpus by
label counts of the training split, with the same exclusions. Writes `evaluation.json` and
`evaluation.png` into the model directory (each atomically) and returns the metrics.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from homefeed import config as config_lib
from homefeed import features
from trainer import metrics as metrics_lib
from trainer import model_dir as layout

LOG = logging.getLogger(__name__)

EXAMPLE_COLUMNS = (
    features.USER_ID,
    features.LABEL,
    features.HISTORY,
    *(features.history_attribute(a) for a in features.ARTICLE_ATTRIBUTES),
    features.EXAMPLE_AGE,
    features.SPLIT,
)


def _read_examples(examples_dir: Path) -> pa.Table:
    path = examples_dir / features.TRAINING_EXAMPLES_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: --examples must be a `candidates extract` output")
    schema = pq.read_schema(path)
    required = (features.USER_ID, features.LABEL, features.HISTORY, features.SPLIT)
    missing = [c for c in required if c not in schema.names]
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing} (has {schema.names})")
    return pq.read_table(path, columns=[c for c in EXAMPLE_COLUMNS if c in schema.names])


def _seen_pairs(train: pa.Table, eval_rows: pd.DataFrame) -> pd.DataFrame:
    """`(user_id, article_id)` of every view before each eval target.

    Every view but a user's first is the label of one training row, and the first is the oldest
    entry of the history of the row labelled with the second; so train labels, the last history
    entry of each train row and the eval rows' histories cover all earlier views without
    expanding every history.
    """
    history = train.column(features.HISTORY).combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(history), 0).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(history).to_numpy(zero_copy_only=False)
    ends = np.cumsum(lengths)
    has = lengths > 0
    users = train.column(features.USER_ID).to_numpy(zero_copy_only=False)
    parts = [
        pd.DataFrame({"user_id": users, "article_id": train.column(features.LABEL).to_numpy(zero_copy_only=False)}),
        pd.DataFrame({"user_id": users[has], "article_id": flat[ends[has] - 1]}),
        eval_rows[["user_id", features.HISTORY]]
        .explode(features.HISTORY)
        .dropna()
        .rename(columns={features.HISTORY: "article_id"}),
    ]
    return pd.concat(parts, ignore_index=True).drop_duplicates()


def _row_dicts(eval_rows: pd.DataFrame) -> list[dict[str, list[str]]]:
    keys = [features.HISTORY, *(features.history_attribute(a) for a in features.ARTICLE_ATTRIBUTES)]
    keys = [k for k in keys if k in eval_rows.columns]
    columns = {k: eval_rows[k].tolist() for k in keys}
    return [{k: list(columns[k][i]) if columns[k][i] is not None else [] for k in keys} for i in range(len(eval_rows))]


def popularity_ranks(
    scores: np.ndarray, targets: np.ndarray, exclude: list[np.ndarray] | None
) -> np.ndarray:
    """`metrics.target_ranks` for one score vector shared by every user, in O(n log n + seen).

    Args:
      scores: float `[n_articles]`; targets, exclude: as in `metrics.target_ranks`.
    """
    order = np.lexsort((np.arange(len(scores)), -scores))  # score desc, then corpus position
    position = np.empty(len(scores), np.int64)
    position[order] = np.arange(len(scores))
    ranks = np.full(len(targets), metrics_lib.MISSED, np.int64)
    for i, target in enumerate(targets):
        if target < 0:
            continue
        excluded = np.asarray(exclude[i] if exclude is not None else [], np.int64)
        if np.any(excluded == target):
            continue
        ranks[i] = position[target] - int((position[excluded] < position[target]).sum())
    return ranks


def recall_curve(ranks: np.ndarray, max_k: int) -> np.ndarray:
    """Recall@K for K = 1..max_k, float `[max_k]`."""
    hits = np.bincount(np.minimum(ranks, max_k).astype(np.int64), minlength=max_k + 1)[:max_k]
    return np.cumsum(hits) / max(len(ranks), 1)


def write_plot(path: Path, model_ranks: np.ndarray, popular_ranks: np.ndarray, ks: tuple[int, ...], title: str) -> None:
    """Recall@K curves (model vs popularity) as a small PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    max_k = max(ks)
    x = np.arange(1, max_k + 1)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for label, ranks, style in (("model", model_ranks, "-"), ("popularity", popular_ranks, "--")):
        curve = recall_curve(ranks, max_k)
        ax.plot(x, curve, style, label=label)
        ax.plot(ks, curve[np.asarray(ks) - 1], "o", color=ax.lines[-1].get_color())
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K")
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(temporary)
    plt.close(fig)
    os.replace(temporary, path)


def evaluate_model(
    model_dir: str | os.PathLike,
    examples_dir: str | os.PathLike,
    config: config_lib.EvaluateConfig | None = None,
) -> dict[str, Any]:
    """Recall@K and NDCG@K of the model and of popularity on the eval split (see module docstring).

    Args:
      model_dir: a finished model directory, or a `train --out` root (its newest model is used).
      examples_dir: the EXTRACT_DIR the model's transform was built from.
      config: cut-offs and options (defaults if None).

    Returns:
      `{"model_version", "model_dir", "num_users", ..., "model": {"recall@10": ..., "ndcg@10": ...},
      "popularity": {...}}` plus the model's metrics at the top level (`metrics["recall@200"]`),
      as also written to `evaluation.json`.

    Raises:
      FileNotFoundError / UnfinishedModelError: no finished model or no examples file.
      ValueError: the examples hold no eval rows.
    """
    from trainer.serving_model import UserEncoder  # TensorFlow: imported only when evaluating

    config = config or config_lib.EvaluateConfig()
    started = time.monotonic()
    model_dir = layout.resolve_model_dir(model_dir)
    manifest = layout.load_manifest(model_dir)
    examples_dir = Path(examples_dir)
    article_ids = (model_dir / layout.ARTICLE_IDS_FILE).read_text().splitlines()
    vectors = np.load(model_dir / layout.ARTICLE_VECTORS_FILE)
    if vectors.shape[0] != len(article_ids):
        raise layout.UnfinishedModelError(
            f"{model_dir}: {len(article_ids)} article ids but {vectors.shape[0]} article vectors"
        )
    corpus_index = pd.Index(article_ids)

    table = _read_examples(examples_dir)
    is_eval = pc.equal(table.column(features.SPLIT), features.EVAL_SPLIT)
    train = table.filter(pc.invert(is_eval))
    eval_rows = table.filter(is_eval).to_pandas()
    if eval_rows.empty:
        raise ValueError(f"{examples_dir / features.TRAINING_EXAMPLES_FILE} has no rows with split = '{features.EVAL_SPLIT}'")
    eval_rows = eval_rows.sort_values(features.USER_ID, kind="stable").reset_index(drop=True)
    if config.max_users is not None and len(eval_rows) > config.max_users:
        keep = np.sort(np.random.default_rng(config.seed).choice(len(eval_rows), config.max_users, replace=False))
        eval_rows = eval_rows.iloc[keep].reset_index(drop=True)
    users = eval_rows[features.USER_ID].astype(str).tolist()
    targets = corpus_index.get_indexer(eval_rows[features.LABEL].astype(str))

    exclude: list[np.ndarray] | None = None
    if config.exclude_seen:
        pairs = _seen_pairs(train, eval_rows)
        pairs = pairs[pairs["user_id"].isin(set(users))]
        pairs = pairs.assign(index=corpus_index.get_indexer(pairs["article_id"].astype(str)))
        pairs = pairs[pairs["index"] >= 0]
        grouped = pairs.groupby("user_id")["index"].apply(lambda s: np.unique(s.to_numpy()))
        empty = np.zeros(0, np.int64)
        exclude = [grouped.get(u, empty) for u in users]
    outside = int((targets < 0).sum())
    seen_targets = 0 if exclude is None else int(sum(t >= 0 and np.any(e == t) for t, e in zip(targets, exclude)))
    LOG.info(
        "evaluating model %s on %d eval users (%d targets outside the corpus, %d already viewed: misses by definition)",
        manifest["model_version"],
        len(users),
        outside,
        seen_targets,
    )

    encoder = UserEncoder(model_dir, history_length=int(manifest.get("history_length") or features.HISTORY_LENGTH))
    ages = (
        eval_rows[features.EXAMPLE_AGE].astype(np.float32).to_numpy()
        if config.example_age == "examples" and features.EXAMPLE_AGE in eval_rows.columns
        else np.float32(features.SERVING_EXAMPLE_AGE)
    )
    user_vectors = encoder.encode_batched(_row_dicts(eval_rows), config.batch_size, example_age_days=ages)
    model_ranks = metrics_lib.batched_ranks(user_vectors, vectors, targets, exclude, config.batch_size)

    counts = pd.Series(train.column(features.LABEL).to_numpy(zero_copy_only=False)).value_counts()
    popularity = counts.reindex(article_ids, fill_value=0).to_numpy(dtype=np.float64)
    popular_ranks = popularity_ranks(popularity, targets, exclude)

    model_metrics = metrics_lib.ranking_metrics(model_ranks, config.ks, config.ndcg_k)
    popular_metrics = metrics_lib.ranking_metrics(popular_ranks, config.ks, config.ndcg_k)
    result: dict[str, Any] = {
        "model_version": manifest["model_version"],
        "model_dir": str(model_dir),
        "examples_dir": str(examples_dir),
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "num_users": len(users),
        "num_articles": len(article_ids),
        "targets_outside_corpus": outside,
        "targets_already_viewed": seen_targets,
        "config": config_lib.to_dict(config),
        **model_metrics,
        "model": model_metrics,
        "popularity": popular_metrics,
        "seconds": round(time.monotonic() - started, 2),
    }
    layout.write_json_atomic(model_dir / layout.EVALUATION_FILE, result)
    write_plot(
        model_dir / layout.EVALUATION_PLOT_FILE,
        model_ranks,
        popular_ranks,
        config.ks,
        f"model {manifest['model_version']}: {len(users)} eval users",
    )
    LOG.info(
        "recall@%d: model %.4f, popularity %.4f (%s) in %.1f s",
        max(config.ks),
        model_metrics[f"recall@{max(config.ks)}"],
        popular_metrics[f"recall@{max(config.ks)}"],
        model_dir / layout.EVALUATION_FILE,
        result["seconds"],
    )
    return result
