"""Id dropout chosen on the validation split: one model per candidate rate, the best one kept.

Id dropout (TrainConfig.id_dropout) is what lets a brand-new listing be placed by its content,
but what it costs the listings that do have views depends on the data: on `sample-data --churn`
(most views go to listings a day old) 0.9 wins on validation, on MovieLens 100K (few new films,
titles that say little) 0 does. The validation set ranks targets never trained (new listings) by
their own vectors, as the service would (trainer/training/validation_set.py), so the choice sees what
dropout buys them. `TrainConfig.id_dropout_choices` lists the rates to try;
`fit_best` trains one model per rate on the same data, validation set and seed, and keeps the one
with the best validation recall@K (the early-stopping figure; ties: the earlier rate in the list).
The test split is never read. The chosen rate becomes the exported config's `id_dropout`, and
`metrics.json` records every candidate's figure under `id_dropout_choice`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from homefeed.config import TrainConfig, from_dict

LOG = logging.getLogger(__name__)

M = TypeVar("M")

METRICS_KEY = "id_dropout_choice"


def train_config(values: dict[str, Any]) -> TrainConfig:
    """`TrainConfig` from fields by name (as `homefeed.config.from_dict`), where an `id_dropout`
    given without `id_dropout_choices` means that rate only: asking for a rate turns the choice off.
    The CLI, the pipeline's train component and the benchmarks build their configs with it."""
    extra = {"id_dropout_choices": ()} if "id_dropout" in values and "id_dropout_choices" not in values else {}
    return from_dict(TrainConfig, {**values, **extra})


def candidate_configs(config: TrainConfig, has_validation: bool) -> list[TrainConfig]:
    """The configs to train: one per distinct rate of `id_dropout_choices` (in order), each with
    `id_dropout` set to it; just `config` when there are no choices or nothing to choose on."""
    rates = list(dict.fromkeys(config.id_dropout_choices))
    if not rates:
        return [config]
    if not has_validation:
        LOG.warning(
            "no validation examples to choose id dropout on: trained with id_dropout %s only (of %s)",
            config.id_dropout,
            rates,
        )
        return [config]
    return [dataclasses.replace(config, id_dropout=rate) for rate in rates]


def fit_best(
    config: TrainConfig, fit_one: Callable[[TrainConfig], tuple[M, dict[str, Any]]], has_validation: bool
) -> tuple[TrainConfig, M, dict[str, Any]]:
    """Trains every candidate with `fit_one(config) -> (model, metrics)` and keeps the best.

    Args:
      config: the requested settings (`id_dropout_choices` empty: one model, at `id_dropout`).
      fit_one: trains one model; its metrics carry `best_validation_recall` (None without validation).
      has_validation: whether there are validation examples to choose on.

    Returns:
      `(chosen config, its model, its metrics)`; with several candidates the metrics also hold
      `id_dropout_choice`: `{"chosen": rate, "validation_recall": {"<rate>": recall, ...},
      "train_seconds": {"<rate>": seconds, ...}}`.
    """
    candidates = candidate_configs(config, has_validation)
    if len(candidates) == 1:
        model, metrics = fit_one(candidates[0])
        return candidates[0], model, metrics
    best: tuple[float, TrainConfig, M, dict[str, Any]] | None = None
    recalls: dict[str, float | None] = {}
    seconds: dict[str, float] = {}
    for candidate in candidates:
        LOG.info(
            "id dropout %s (candidate %d of %d, chosen on validation)",
            candidate.id_dropout,
            len(recalls) + 1,
            len(candidates),
        )
        model, metrics = fit_one(candidate)
        recall = metrics.get("best_validation_recall")
        recalls[str(candidate.id_dropout)] = recall
        seconds[str(candidate.id_dropout)] = metrics.get("train_seconds", 0.0)
        score = -1.0 if recall is None else float(recall)
        if best is None or score > best[0]:
            best = (score, candidate, model, metrics)
        else:
            del model  # only the best model is kept in memory
    assert best is not None
    _, chosen, model, metrics = best
    metrics = {
        **metrics,
        METRICS_KEY: {"chosen": chosen.id_dropout, "validation_recall": recalls, "train_seconds": seconds},
    }
    metrics["train_seconds"] = round(sum(seconds.values()), 2)
    LOG.info(
        "id dropout %s chosen on validation recall (%s)",
        chosen.id_dropout,
        ", ".join(f"{rate}: {'n/a' if r is None else f'{r:.4f}'}" for rate, r in recalls.items()),
    )
    return chosen, model, metrics
