"""The served corpus of a model directory, and the published model re-run on the same test views (the paired gate)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from homefeed import config as config_lib
from homefeed import features
from homefeed.layout import extract_dir as extract_layout
from homefeed.layout import model_dir as layout
from trainer.evaluation import replay
from trainer.evaluation import served_corpus as served_lib
from trainer.towers import article_inputs

LOG = logging.getLogger(__name__)


def served_corpus_of(encoder, article_ids: list[str], articles: pd.DataFrame, examples_dir: Path):
    """`(served corpus, the model's article tower or None)`: the corpus live at each view with
    the tower embedding it (the live service's path), or the as_of snapshot with the exported
    vectors when the views have no times or the model predates the `article_vectors` signature."""
    views = served_lib.read_views(examples_dir / extract_layout.TRAINING_EXAMPLES_FILE)
    listings = served_lib.read_listings(examples_dir / extract_layout.LISTINGS_FILE)
    served = served_lib.ServedCorpus.build(article_ids, articles, views, listings)
    if not served.timed:
        return served, None
    try:
        encoder.article_vectors(article_inputs.corpus_article_features(served.frame.iloc[:1], 0.0))
    except ValueError as error:
        LOG.warning("%s: ranked over the as_of corpus with its exported vectors", error)
        return served_lib.ServedCorpus.snapshot(article_ids, articles), None
    return served, encoder.article_vectors


def published_ranks(
    model_dir: Path,
    examples_dir: Path,
    eval_rows: pd.DataFrame,
    rows: list,
    times: np.ndarray,
    ages,
    seen_ids: list[list[str]] | None,
    as_of_ms: float,
    config: config_lib.EvaluateConfig,
) -> tuple[str, np.ndarray]:
    """(version, ranks) of another model directory on the same test views: its exported towers,
    its corpus over the same listings at each view's time, the same seen sets (as ids)."""
    from trainer.towers.serving_model import UserEncoder

    model_dir = layout.resolve_model_dir(model_dir)
    manifest = layout.load_manifest(model_dir)
    article_ids = (model_dir / layout.ARTICLE_IDS_FILE).read_text().splitlines()
    vectors = np.load(model_dir / layout.ARTICLE_VECTORS_FILE)
    articles = (
        pd.read_parquet(model_dir / layout.ARTICLES_FILE)
        if (model_dir / layout.ARTICLES_FILE).exists()
        else pd.DataFrame()
    )
    encoder = UserEncoder(model_dir, history_length=int(manifest.get("history_length") or features.HISTORY_LENGTH))
    served, embed = served_corpus_of(encoder, article_ids, articles, examples_dir)
    index = served.article_ids
    targets = index.get_indexer(eval_rows[features.LABEL].astype(str))
    exclude = None
    if seen_ids is not None:
        exclude = [(lambda e: e[e >= 0])(index.get_indexer(pd.Index(ids, dtype=object))) for ids in seen_ids]
    # Ranked by the candidate's function (replay.py), on the same views with the same seen sets.
    views = replay.HeldOutViews(eval_rows, eval_rows[features.USER_ID].astype(str).tolist(), targets, times, exclude)
    ranks, _ = replay.replay_ranks(
        encoder, views, served, as_of_ms, config.batch_size, ages, fixed_vectors=None if embed is not None else vectors
    )
    LOG.info("re-ran the published model %s on the same %d test views", manifest["model_version"], len(targets))
    return str(manifest["model_version"]), ranks
