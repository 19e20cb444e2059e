"""Served recall with intervals, the evaluation's own figure, and whether the two agree.

The served figure and the evaluation's are two estimates of one quantity (the model's recall on the
next views) made on different views: the evaluation's test views come before the cut, the served
ones after it. Each carries a 95 % bootstrap interval over users (trainer/evaluation/metrics.py).
Two independent estimates agree when their difference is within its own 95 % interval,
`|served - evaluated| <= z * sqrt(se_served^2 + se_evaluated^2)`, each standard error read from its
interval (half-width / z). That is stricter than "the intervals overlap" (which allows a gap of up
to z * (se_s + se_e)) and fairer than "served lies within the evaluation's interval" (which ignores
the served figure's own noise, so a small window would fail by chance far more than 5 % of the time).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trainer.evaluation import metrics as metrics_lib

Z95 = 1.959963984540054


def served_recall(ranks: np.ndarray, users: list[str], ks=(50, 200), seed: int = 0) -> dict[str, Any]:
    """`{"views", "users", "recall@K": value, "interval": {"recall@K": [lo, hi]}}` of the answered views."""
    ranks = np.asarray(ranks, dtype=np.int64)
    users_array = np.asarray(users, dtype=object)
    out: dict[str, Any] = {"views": int(len(ranks)), "users": int(len(set(users)))}
    if not len(ranks):
        raise ValueError("no view was answered: nothing to score (is the held-out window empty?)")
    boot = metrics_lib.recall_intervals({"served": ranks}, ks, users_array, seed=seed)
    for k in ks:
        out[f"recall@{k}"] = float(np.mean(ranks < k))
    out["interval"] = boot["recall"]["served"]
    return out


def evaluation_figure(evaluation: dict[str, Any], k: int) -> dict[str, Any]:
    """The evaluation's model recall@k, its interval, and how it was measured (`protocol`, `split`).

    Raises:
      ValueError: evaluation.json has no recall@k or no interval for it.
    """
    key = f"recall@{k}"
    model = evaluation.get("model") or {}
    value = model.get(key, evaluation.get(key))
    interval = (((evaluation.get("intervals") or {}).get("recall") or {}).get("model") or {}).get(key)
    if value is None or interval is None:
        raise ValueError(f"evaluation.json has no model {key} with an interval (keys: {sorted(evaluation)[:20]})")
    return {
        "recall": float(value),
        "interval": [float(interval[0]), float(interval[1])],
        "protocol": evaluation.get("protocol"),
        "split": evaluation.get("split"),
        "num_users": evaluation.get("num_users"),
        "model_version": evaluation.get("model_version"),
    }


def standard_error(interval) -> float:
    return (float(interval[1]) - float(interval[0])) / (2 * Z95)


def compare(served: float, served_interval, evaluated: float, evaluated_interval) -> dict[str, Any]:
    """Whether the served and evaluated figures agree (module docstring): the difference, its 95 %
    interval, and `agrees`; also whether served lies within the evaluation's interval, for reference."""
    se = math.hypot(standard_error(served_interval), standard_error(evaluated_interval))
    difference = served - evaluated
    return {
        "difference": difference,
        "difference_interval": [difference - Z95 * se, difference + Z95 * se],
        "agrees": abs(difference) <= Z95 * se,
        "served_within_evaluation_interval": evaluated_interval[0] <= served <= evaluated_interval[1],
    }


def report(served: dict[str, Any], evaluation: dict[str, Any], ks=(50, 200)) -> dict[str, Any]:
    """Per K: the served figure, the evaluation's, and `compare` of the two."""
    out = {}
    for k in ks:
        figure = evaluation_figure(evaluation, k)
        key = f"recall@{k}"
        out[key] = {
            "served": served[key],
            "served_interval": served["interval"][key],
            "evaluated": figure["recall"],
            "evaluated_interval": figure["interval"],
            **compare(served[key], served["interval"][key], figure["recall"], figure["interval"]),
        }
    return out


def table(label: str, rows: dict[str, Any]) -> str:
    """The comparison as a printed table, one line per K."""

    def span(interval) -> str:
        return f"[{interval[0]:.3f}, {interval[1]:.3f}]"

    lines = [
        f"{'data':<12} {'K':>4}  {'served':>7} {'95% interval':<16}  {'evaluated':>9} {'95% interval':<16}  "
        f"{'diff':>7} {'95% interval':<18} agrees"
    ]
    for key, row in rows.items():
        lines.append(
            f"{label:<12} {key.split('@')[1]:>4}  {row['served']:>7.3f} {span(row['served_interval']):<16}  "
            f"{row['evaluated']:>9.3f} {span(row['evaluated_interval']):<16}  {row['difference']:>+7.3f} "
            f"{span(row['difference_interval']):<18} {'yes' if row['agrees'] else 'NO'}"
        )
    return "\n".join(lines)
