"""Offline evaluation of a model directory on the TEST split of an extract, against baselines.

Protocol (docs/evaluation.md): the test views are the extract's `split = test` rows (never used for
a choice, only reported and read by the publish gate): under the time split (marketplace data)
every view in [T_test, as_of], under the per-user split each user's last view. Each is replayed as
the live service saw it, by the same function that ranks validation during training
(trainer/evaluation/replay.py): over the corpus live at its time (trainer/evaluation/served_corpus.py,
the one owner of that definition: created_at <= t < removed_at from the extract's listings, each
vector made by the model's article tower at the listing's age then; without view times, the as_of
corpus and `article_vectors.npy`), its history the H views before it, minus the user's seen set at
that moment (the service's: the last features.SEEN_LENGTH distinct articles among every view before
it). The user vector comes from `trainer.towers.serving_model.UserEncoder` (raw strings into the
exported SavedModel at the serving example age, as the service does). The baselines
(trainer/evaluation/baselines.py: popularity, trending over the last 1 and 7 days before the view,
item-kNN, category/region popularity) count only views before the test window and at or before
each view, and rank the same rows with the same exclusions (trainer/evaluation/served_ranks.py).
Writes `evaluation.json` (its protocol under `protocol`, the extract's split among it),
`evaluation.png` (recall@K curves) and `predictions.html` (a sample of users' test views and top
candidates from the as_of corpus, trainer/evaluation/predictions.py) into the model directory, each
atomically, and returns the metrics.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from homefeed import config as config_lib
from homefeed import features
from homefeed.layout import extract_dir as extract_layout
from homefeed.layout import model_dir as layout
from trainer.evaluation import baselines as baselines_lib
from trainer.evaluation import cold_start, replay, served_ranks
from trainer.evaluation import held_out as examples_lib
from trainer.evaluation import metrics as metrics_lib
from trainer.evaluation import predictions as predictions_lib
from trainer.evaluation import served_corpus as served_lib
from trainer.evaluation.intervals import evaluation_intervals
from trainer.evaluation.plot import write_plot
from trainer.evaluation.published import published_ranks, served_corpus_of

LOG = logging.getLogger(__name__)


def popularity_ranks(scores: np.ndarray, targets: np.ndarray, exclude: list[np.ndarray] | None) -> np.ndarray:
    """`metrics.target_ranks` for one score vector shared by every user (see baselines)."""
    return baselines_lib.shared_score_ranks(scores, targets, exclude)


def _as_of_corpus_metrics(served, vectors, user_vectors, targets, exclude, log, config) -> dict[str, Any]:
    """The model's and popularity's figures over the as_of corpus and its exported vectors alone:
    what replaying the test users against the exported index gives (a target sold before as_of a
    miss, listings created after a view among its candidates). Not the gate's figure; the
    comparison with such a replay (tests/test_end_to_end.py)."""
    n = served.num_exported
    snapshot_targets = np.where(targets < n, targets, -1)
    snapshot_exclude = None if exclude is None else [e[e < n] for e in exclude]
    model = metrics_lib.batched_ranks(user_vectors, vectors, snapshot_targets, snapshot_exclude, config.batch_size)
    popularity = baselines_lib.shared_score_ranks(
        baselines_lib.popularity_scores(log)[:n], snapshot_targets, snapshot_exclude
    )
    return {
        "model": metrics_lib.ranking_metrics(model, config.ks, config.ndcg_k),
        "popularity": metrics_lib.ranking_metrics(popularity, config.ks, config.ndcg_k),
    }


def evaluate_model(
    model_dir: str | os.PathLike,
    examples_dir: str | os.PathLike,
    config: config_lib.EvaluateConfig | None = None,
    served: served_lib.ServedCorpus | None = None,
    published_model_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Recall@K and NDCG@K of the model and of the baselines on the test split (see module docstring).

    Args:
      model_dir: a finished model directory, or a `train --out` root (its newest model is used).
      examples_dir: the EXTRACT_DIR the model's transform was built from.
      config: cut-offs and options (defaults if None).
      served: the corpus to rank each view over (its first rows the model's corpus, in order);
        default: `ServedCorpus.build` from the extract (benchmarks pass a generator's true one).
      published_model_dir: the published model, re-run on the same test views (its exported
        towers, its own corpus over the same listings, the same seen sets) so the publish gate
        compares the two pairwise (`published` and `intervals.ratio["model/published"]`).

    Returns:
      `{"model_version", "model_dir", "split", "fit", "as_of", "num_users", ..., "model":
      {"recall@10": ..., "ndcg@10": ...}, "baselines": {"popularity": {...}, "trending_1d": ...,
      "trending_7d": ..., "item_knn": ...}, "popularity": {...}}` plus the model's metrics at the
      top level (`metrics["recall@200"]`), as also written to `evaluation.json`.

    Raises:
      FileNotFoundError / UnfinishedModelError: no finished model or no examples file.
      ValueError: the examples hold no test rows.
    """
    from trainer.towers.serving_model import UserEncoder  # TensorFlow: imported only when evaluating

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
    table = examples_lib.read_examples(examples_dir)
    articles = (
        pd.read_parquet(model_dir / layout.ARTICLES_FILE)
        if (model_dir / layout.ARTICLES_FILE).exists()
        else pd.DataFrame()
    )
    encoder = UserEncoder(model_dir, history_length=int(manifest.get("history_length") or features.HISTORY_LENGTH))
    served, embed = (
        (served, encoder.article_vectors)
        if served is not None
        else served_corpus_of(encoder, article_ids, articles, examples_dir)
    )
    corpus_index = served.article_ids
    if not pc.any(pc.equal(table.column(features.SPLIT), features.TEST_SPLIT)).as_py():
        raise ValueError(
            f"{examples_dir / extract_layout.TRAINING_EXAMPLES_FILE} has no rows with split = '{features.TEST_SPLIT}'"
        )
    # The test views as the one replay protocol takes them (trainer/evaluation/replay.py): targets,
    # times and each view's seen set (the service's, at the view).
    held_out = replay.held_out_views(
        table, features.TEST_SPLIT, served, config.max_users, config.seed, exclude_seen=config.exclude_seen
    )
    eval_rows, users, targets, exclude = held_out.rows, held_out.users, held_out.targets, held_out.exclude

    views = examples_lib.views_before_test(table)
    # Each test user's views before the test window (per-user: before their last view): item-kNN's input.
    log, user_index, histories = served_ranks.baseline_log(views, users, corpus_index)
    outside = int((targets < 0).sum())
    seen_targets = 0 if exclude is None else int(sum(t >= 0 and np.any(e == t) for t, e in zip(targets, exclude)))
    LOG.info(
        "evaluating model %s on %d test users (%d targets outside the corpus, %d already viewed: misses by definition)",
        manifest["model_version"],
        len(users),
        outside,
        seen_targets,
    )

    times = held_out.times_ms
    ages: float | np.ndarray = (
        eval_rows[features.EXAMPLE_AGE].astype(np.float32).to_numpy()
        if config.example_age == "examples" and features.EXAMPLE_AGE in eval_rows.columns
        else float(features.SERVING_EXAMPLE_AGE)
    )
    rows = examples_lib.row_dicts(eval_rows)
    as_of = examples_lib.as_of(examples_dir, views)
    as_of_ms = manifest.get("article_ages_at_ms") or (np.nan if as_of is None else pd.Timestamp(as_of).value / 1e6)
    # The one ranking of validation and test (trainer/evaluation/replay.py).
    model_ranks, user_vectors = replay.replay_ranks(
        encoder,
        held_out,
        served,
        float(as_of_ms),
        config.batch_size,
        ages,
        fixed_vectors=None if embed is not None else vectors,
    )
    published = None
    if published_model_dir is not None:
        try:
            published = published_ranks(
                Path(published_model_dir),
                examples_dir,
                eval_rows,
                rows,
                times,
                ages,
                None if exclude is None else [corpus_index[e].tolist() for e in exclude],
                float(as_of_ms),
                config,
            )
        except (OSError, ValueError) as error:  # the gate then compares stored figures, and says so
            LOG.warning("the published model %s could not be re-run on the test views: %s", published_model_dir, error)
    knn_users = None
    if len(users) > config.knn_max_users:
        knn_users = np.sort(np.random.default_rng(config.seed).choice(len(users), config.knn_max_users, replace=False))
        LOG.info("item-kNN baseline on a sample of %d of the %d test users", config.knn_max_users, len(users))
    baseline_ranks = served_ranks.baseline_ranks(
        served,
        log,
        as_of,
        times,
        user_index.get_indexer(users),
        histories,
        targets,
        exclude,
        knn_users,
        served_ranks.category_region(served, log, as_of),
    )
    rankable = (targets >= 0) & np.array(
        [exclude is None or not np.any(exclude[i] == t) for i, t in enumerate(targets)], bool
    )
    new = cold_start.new_target_mask(table, eval_rows[features.LABEL].astype(str).tolist())
    cold = cold_start.cold_start_metrics(
        new,
        {"model": model_ranks, **{n: r for n, r in baseline_ranks.items() if len(r) == len(targets)}},
        config.ks,
        config.ndcg_k,
        rankable,
    )
    fresh_mask = cold_start.fresh_target_mask(table, eval_rows[features.LABEL].astype(str).tolist(), times)
    fresh = {
        **cold_start.cold_start_metrics(
            fresh_mask,
            {"model": model_ranks, **{n: r for n, r in baseline_ranks.items() if len(r) == len(targets)}},
            config.ks,
            config.ndcg_k,
            rankable,
        ),
        "definition": cold_start.FRESH_DEFINITION,
    }
    model_metrics = metrics_lib.ranking_metrics(model_ranks, config.ks, config.ndcg_k)
    as_of_corpus = _as_of_corpus_metrics(served, vectors, user_vectors, targets, exclude, log, config)
    baseline_metrics = {
        name: metrics_lib.ranking_metrics(r, config.ks, config.ndcg_k) for name, r in baseline_ranks.items()
    }
    intervals = evaluation_intervals(
        model_ranks,
        baseline_ranks | ({"published": published[1]} if published else {}),
        np.asarray(users, dtype=object),
        knn_users,
        {"cold_start": new, "fresh": fresh_mask},
        config.ks,
        config.seed,
    )
    if published:
        # Not a baseline: the model it would replace, on the same views.
        intervals["published_version"] = published[0]
    metrics_file = model_dir / layout.METRICS_FILE
    fit = json.loads(metrics_file.read_text()).get("fit") if metrics_file.exists() else None
    result: dict[str, Any] = {
        "model_version": manifest["model_version"],
        "model_dir": str(model_dir),
        "examples_dir": str(examples_dir),
        "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "split": features.TEST_SPLIT,
        "fit": fit,
        "as_of": None if as_of is None else pd.Timestamp(as_of).tz_localize("UTC").isoformat(),
        "num_users": len(users),
        "item_knn_users": len(users) if knn_users is None else len(knn_users),
        "num_articles": len(article_ids),
        "served_corpus": {
            "definition": (
                "the as_of corpus (no view times)"
                if not served.timed
                else served_lib.DEFINITION
                if (examples_dir / extract_layout.LISTINGS_FILE).exists()
                else served_lib.DEFINITION_WITHOUT_LISTINGS
            ),
            "listings": len(served),
            "median_live": float(np.median([len(served.live_rows(t)) for t in times[:: max(1, len(times) // 200)]])),
        },
        "targets_outside_corpus": outside,
        "targets_already_viewed": seen_targets,
        "config": config_lib.to_dict(config),
        **model_metrics,
        "model": model_metrics,
        "baselines": baseline_metrics,
        "popularity": baseline_metrics["popularity"],
        "cold_start": cold,
        # The freshest listings (first viewed less than a day before the view), beside trending.
        "fresh": fresh,
        **(
            {
                "published": {
                    "model_version": published[0],
                    "model_dir": str(published_model_dir),
                    **metrics_lib.ranking_metrics(published[1], config.ks, config.ndcg_k),
                }
            }
            if published
            else {}
        ),
        # 95 % bootstrap intervals (test users resampled) of every recall above, and paired ones of
        # the model's recall over each baseline's on the same views.
        "intervals": intervals,
        "as_of_corpus": as_of_corpus,
        # How recall was measured; the publish gate compares versions only under the same protocol.
        layout.EVALUATION_PROTOCOL_KEY: {
            "split": features.TEST_SPLIT,
            "split_protocol": examples_lib.split_protocol(examples_dir),
            "example_age": config.example_age,
            "seen_excluded": replay.SEEN_DEFINITION,
            "corpus": "live at each view" if served.timed else "as_of snapshot",
        },
    }
    exported_exclude = (
        None if exclude is None else [e[e < len(article_ids)] for e in exclude]
    )  # the page shows the as_of corpus
    sample = predictions_lib.sample_predictions(
        users,
        rows,
        eval_rows[features.LABEL].astype(str).tolist(),
        user_vectors,
        vectors,
        article_ids,
        exported_exclude,
        model_ranks,
        config.sample_users,
        config.seed,
    )
    write_plot(
        model_dir / layout.EVALUATION_PLOT_FILE,
        {"model": model_ranks, **baseline_ranks},
        config.ks,
        f"model {manifest['model_version']}: {len(users)} test users",
    )
    titles = predictions_lib.read_titles(model_dir / layout.ARTICLES_FILE)
    plot = (model_dir / layout.EVALUATION_PLOT_FILE).read_bytes()
    page = predictions_lib.render_html(result, sample, titles, max(config.ks), plot)
    layout.write_text_atomic(model_dir / layout.PREDICTIONS_PAGE_FILE, page)
    if cold["num_users"]:
        LOG.info(
            "new listings (%d test views, %s): recall@%d model %.4f, %s",
            cold["num_users"],
            cold_start.DEFINITION,
            k_max := max(config.ks),
            cold["model"][f"recall@{k_max}"],
            ", ".join(
                f"{n} {m[f'recall@{k_max}']:.4f}" for n, m in cold.items() if isinstance(m, dict) and m and n != "model"
            ),
        )
    result["seconds"] = round(time.monotonic() - started, 2)
    layout.write_json_atomic(model_dir / layout.EVALUATION_FILE, result)
    k = max(config.ks)
    LOG.info(
        "recall@%d on the test split: model %.4f, %s (%s) in %.1f s",
        k,
        model_metrics[f"recall@{k}"],
        ", ".join(f"{name} {m[f'recall@{k}']:.4f}" for name, m in baseline_metrics.items()),
        model_dir / layout.EVALUATION_FILE,
        result["seconds"],
    )
    return result
