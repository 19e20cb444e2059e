"""Bootstrap intervals of every recall an evaluation reports, each ranker alone and the model over each baseline."""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.evaluation import metrics as metrics_lib


def evaluation_intervals(
    model_ranks: np.ndarray,
    baseline_ranks: dict[str, np.ndarray],
    users: np.ndarray,
    knn_users: np.ndarray | None,
    slices: dict[str, np.ndarray],
    ks,
    seed: int,
) -> dict[str, Any]:
    """Bootstrap intervals (metrics.recall_intervals) of every recall evaluation.json reports:
    overall and on each slice of the views (`cold_start`: new listings, `fresh`), each ranker alone and the model over each baseline
    (paired: the same resampled users). A baseline ranked on a sample of the users (item-kNN past
    `knn_max_users`) is paired with the model on that sample."""
    full = {"model": model_ranks, **{n: r for n, r in baseline_ranks.items() if len(r) == len(model_ranks)}}
    out = metrics_lib.recall_intervals(full, ks, users, [("model", n) for n in full if n != "model"], seed=seed)
    for name, ranks in baseline_ranks.items():
        if name in full or knn_users is None:
            continue
        sampled = metrics_lib.recall_intervals(
            {"model": model_ranks[knn_users], name: ranks}, ks, users[knn_users], [("model", name)], seed=seed
        )
        out["recall"][name] = sampled["recall"][name]
        out["ratio"][f"model/{name}"] = {**sampled["ratio"][f"model/{name}"], "users": sampled["users"]}
    for name, mask in slices.items():
        if not mask.any():
            continue
        part = metrics_lib.recall_intervals(
            {n: np.asarray(r)[mask] for n, r in full.items()},
            ks,
            users[mask],
            [("model", n) for n in full if n != "model"],
            seed=seed,
        )
        out[name] = {"users": part["users"], "recall": part["recall"], "ratio": part["ratio"]}
    return out
