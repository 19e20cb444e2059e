"""The output viewer: a page showing what the model recommends to a sample of test users.

For each sampled user: their last views (most recent first) with titles, the model's top
candidates with titles and scores (already-viewed articles removed, ties by corpus position, as
the evaluation ranks), and whether the held-out test view was found within K (and at which rank).
Above them, the evaluation's figures for the model and every baseline, and optionally the recall
plot. `evaluate_model` writes it to `MODEL_DIR/predictions.html`; the evaluate component passes
the same page to Kubeflow as its HTML artifact.

numpy, pandas and the standard library only.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from homefeed import features
from trainer.evaluation import metrics as metrics_lib

LAST_VIEWS_SHOWN = 10
CANDIDATES_SHOWN = 10
HIT_STYLE = " style='background: #cfc'"  # the candidate row that is the held-out view


@dataclass
class SamplePrediction:
    """One sampled test user: `last_views` (article ids, most recent first), `target` (the held-out
    view), `rank` (0-based, `metrics.MISSED` when it cannot be ranked) and `candidates`
    (`(article_id, score)`, best first)."""

    user_id: str
    last_views: list[str]
    target: str
    rank: int
    candidates: list[tuple[str, float]]


def top_candidates(scores: np.ndarray, exclude: np.ndarray | None, k: int) -> np.ndarray:
    """Corpus rows of the `k` best scores, best first, `exclude` removed, ties by corpus position."""
    scores = np.asarray(scores, np.float64).copy()
    if exclude is not None and len(exclude):
        scores[np.asarray(exclude, np.int64)] = -np.inf
    order = np.lexsort((np.arange(len(scores)), -scores))
    order = order[np.isfinite(scores[order])]
    return order[:k]


def sample_predictions(
    users: Sequence[str],
    rows: Sequence[Mapping[str, Sequence[str]]],
    labels: Sequence[str],
    user_vectors: np.ndarray,
    article_vectors: np.ndarray,
    article_ids: Sequence[str],
    exclude: Sequence[np.ndarray] | None,
    ranks: np.ndarray,
    sample_size: int,
    seed: int,
) -> list[SamplePrediction]:
    """A seeded sample of at most `sample_size` test users, in user order (see `SamplePrediction`).

    Args:
      users, rows, labels: per test user: id, raw features (`history` most recent first), target id.
      user_vectors: float `[n_users, d]`; article_vectors: float `[n_articles, d]` (exact search).
      article_ids: `[n_articles]`; exclude: per user, corpus rows removed from the ranking.
      ranks: the evaluation's target ranks `[n_users]`.
    """
    n = len(users)
    if n == 0 or sample_size < 1:
        return []
    chosen = np.sort(np.random.default_rng(seed).choice(n, min(sample_size, n), replace=False))
    out = []
    for i in chosen:
        scores = article_vectors @ user_vectors[i]
        top = top_candidates(scores, None if exclude is None else exclude[i], CANDIDATES_SHOWN)
        out.append(
            SamplePrediction(
                user_id=str(users[i]),
                last_views=[str(a) for a in list(rows[i].get(features.HISTORY, []))[:LAST_VIEWS_SHOWN]],
                target=str(labels[i]),
                rank=int(ranks[i]),
                candidates=[(str(article_ids[j]), float(scores[j])) for j in top],
            )
        )
    return out


def read_titles(articles_file: Path) -> dict[str, str]:
    """Corpus article id -> title ("" when it has none) from a model directory's
    `articles.parquet` ({} when absent)."""
    if not Path(articles_file).exists():
        return {}
    frame = pd.read_parquet(articles_file)
    titles = frame["title"] if "title" in frame.columns else pd.Series([None] * len(frame))
    return dict(zip(frame[features.ARTICLE_ID].astype(str), titles.fillna("").astype(str)))


def _article(article_id: str, titles: Mapping[str, str]) -> str:
    """The article's id and title; an id the corpus lacks (e.g. a listing sold since) is marked."""
    label = html.escape(article_id)
    if titles and article_id not in titles:
        return f"{label} <small style='color: #888'>(no longer in the corpus)</small>"
    title = titles.get(article_id)
    return f"{label} <i>{html.escape(title)}</i>" if title else label


def _figures_table(result: Mapping[str, Any]) -> str:
    columns = {"model": result["model"], **result.get("baselines", {})}
    metrics = list(result["model"])
    head = "".join(f"<th>{html.escape(name)}</th>" for name in columns)
    intervals = (result.get("intervals") or {}).get("recall", {})

    def cell(name: str, m: str, figures: Mapping[str, float]) -> str:
        interval = intervals.get(name, {}).get(m)
        spread = f"<br><small>[{interval[0]:.4f}, {interval[1]:.4f}]</small>" if interval else ""
        return f"<td>{figures.get(m, float('nan')):.4f}{spread}</td>"

    body = "".join(
        f"<tr><td>{html.escape(m)}</td>"
        + "".join(cell(name, m, figures) for name, figures in columns.items())
        + "</tr>"
        for m in metrics
    )
    ratios = (result.get("intervals") or {}).get("ratio", {})
    widest = next((m for m in reversed(metrics) if m.startswith("recall@")), None)
    paired = "".join(
        f"<li>{html.escape(pair)} {html.escape(m)}: {f['ratio']:.3f} [{f['interval'][0]:.3f}, {f['interval'][1]:.3f}]</li>"
        for pair, figures in ratios.items()
        for m, f in figures.items()
        if isinstance(f, dict) and m == widest
    )
    note = (
        "<p><small>In brackets: 95 % bootstrap intervals (test users resampled). Ratios of the model's recall "
        f"over each baseline's on the same views, paired:</small></p><ul>{paired}</ul>"
        if intervals
        else ""
    )
    table = f"<table border='1' cellpadding='4' style='border-collapse: collapse'><tr><th>metric</th>{head}</tr>{body}</table>"
    return table + note


def render_html(
    result: Mapping[str, Any],
    sample: Sequence[SamplePrediction],
    titles: Mapping[str, str],
    k: int,
    plot_png: bytes | None = None,
) -> str:
    """The page (see module docstring) as one self-contained HTML string (the plot inlined)."""
    found = sum(1 for s in sample if s.rank < k)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>"
        f"model {html.escape(str(result['model_version']))}</title></head><body style='font-family: sans-serif'>",
        f"<h2>Model {html.escape(str(result['model_version']))}: {result['num_users']} test users "
        f"(each user's last view held out; seen articles excluded)</h2>",
    ]
    fit = result.get("fit")
    if fit:
        parts.append(
            f"<p>Fitted on {html.escape(', '.join(fit.get('splits', [])))} for {fit.get('epochs')} epochs "
            f"(chosen on {html.escape(str(fit.get('chosen_on')))}).</p>"
        )
    if plot_png:
        picture = base64.b64encode(plot_png).decode()
        parts.append(f"<img alt='recall@K' src='data:image/png;base64,{picture}' style='max-width: 720px'/>")
    parts.append(_figures_table(result))
    parts.append(
        f"<p>{result.get('targets_outside_corpus', 0)} targets outside the corpus, "
        f"{result.get('targets_already_viewed', 0)} already viewed (misses by definition).</p>"
    )
    parts.append(f"<h3>{len(sample)} sampled users: held-out view found in the top {k} for {found}</h3>")
    for s in sample:
        if s.rank == metrics_lib.MISSED:
            verdict = "not rankable (outside the corpus or already viewed)"
        elif s.rank < k:
            verdict = f"found at rank {s.rank + 1}"
        else:
            verdict = f"not found (rank {s.rank + 1} &gt; {k})"
        views = "".join(f"<li>{_article(a, titles)}</li>" for a in s.last_views) or "<li>(no views)</li>"
        rows = "".join(
            f"<tr{HIT_STYLE if a == s.target else ''}><td>{i}</td><td>{_article(a, titles)}</td><td>{score:.4f}</td></tr>"
            for i, (a, score) in enumerate(s.candidates, start=1)
        )
        parts.append(
            f"<h4>user {html.escape(s.user_id)}: held-out view {_article(s.target, titles)}: {verdict}</h4>"
            "<div style='display: flex; gap: 2em'>"
            f"<div><b>last views (most recent first)</b><ol>{views}</ol></div>"
            "<div><b>top candidates</b><table border='1' cellpadding='3' style='border-collapse: collapse'>"
            f"<tr><th>#</th><th>article</th><th>score</th></tr>{rows}</table></div></div>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
