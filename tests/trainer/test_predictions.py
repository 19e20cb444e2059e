"""The output viewer: sampled users' candidates against a brute-force reference, and the page."""

from __future__ import annotations

import numpy as np
import pandas as pd

from homefeed import features
from trainer.evaluation import metrics as metrics_lib
from trainer.evaluation import predictions


def test_top_candidates_skip_exclusions_and_break_ties_by_corpus_position():
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.1])
    assert predictions.top_candidates(scores, np.array([1]), 3).tolist() == [3, 0, 2]
    assert predictions.top_candidates(scores, None, 10).tolist() == [1, 3, 0, 2, 4]
    assert predictions.top_candidates(scores, np.array([0, 1, 2, 3, 4]), 3).tolist() == []


def _sample():
    rng = np.random.default_rng(0)
    users = [f"u{i}" for i in range(6)]
    article_ids = [f"a{i}" for i in range(12)]
    rows = [{features.HISTORY: [f"a{(i + j) % 12}" for j in range(i + 1)]} for i in range(6)]
    labels = ["a5", "a6", "a7", "a8", "a9", "zz"]
    user_vectors = rng.normal(size=(6, 4)).astype(np.float32)
    article_vectors = rng.normal(size=(12, 4)).astype(np.float32)
    exclude = [np.array([(i + j) % 12 for j in range(i + 1)]) for i in range(6)]
    targets = pd.Index(article_ids).get_indexer(labels)
    ranks = metrics_lib.batched_ranks(user_vectors, article_vectors, targets, exclude)
    sample = predictions.sample_predictions(
        users, rows, labels, user_vectors, article_vectors, article_ids, exclude, ranks, 4, seed=1
    )
    return sample, (users, rows, labels, user_vectors, article_vectors, exclude, ranks)


def test_sample_predictions_match_an_exact_search():
    sample, (users, rows, labels, user_vectors, article_vectors, exclude, ranks) = _sample()
    assert len(sample) == 4 and [s.user_id for s in sample] == sorted(s.user_id for s in sample)
    for s in sample:
        i = users.index(s.user_id)
        scores = article_vectors @ user_vectors[i]
        allowed = [j for j in range(12) if j not in set(exclude[i].tolist())]
        best = sorted(allowed, key=lambda j: (-scores[j], j))[: predictions.CANDIDATES_SHOWN]
        assert [a for a, _ in s.candidates] == [f"a{j}" for j in best]
        assert [round(x, 5) for _, x in s.candidates] == [round(float(scores[j]), 5) for j in best]
        assert s.last_views == rows[i][features.HISTORY][: predictions.LAST_VIEWS_SHOWN]
        assert (s.target, s.rank) == (labels[i], int(ranks[i]))
    # the same seed gives the same users
    again, _ = _sample()
    assert [s.user_id for s in again] == [s.user_id for s in sample]


def test_the_page_shows_titles_scores_and_whether_the_held_out_view_was_found():
    sample = [
        predictions.SamplePrediction("u1", ["a1", "a2"], "a3", 0, [("a3", 0.91), ("a4", 0.5)]),
        predictions.SamplePrediction("u2", ["a4"], "a9", 250, [("a1", 0.7)]),
        predictions.SamplePrediction("u<3>", [], "zz", metrics_lib.MISSED, []),
    ]
    result = {
        "model_version": "v1",
        "num_users": 3,
        "model": {"recall@200": 0.5},
        "baselines": {"popularity": {"recall@200": 0.25}, "item_knn": {"recall@200": 0.375}},
        "fit": {"splits": ["train"], "epochs": 4, "chosen_on": "validation"},
    }
    titles = {"a1": "Bike & helmet", "a3": "Sofa", "a4": "Lamp"}
    page = predictions.render_html(result, sample, titles, 200, plot_png=b"\x89PNG")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "Bike &amp; helmet" in page and "<i>Sofa</i>" in page  # titles, escaped
    assert "a2 <small style='color: #888'>(no longer in the corpus)</small>" in page  # a viewed listing since gone
    assert "u&lt;3&gt;" in page and "u<3>" not in page
    assert "found at rank 1" in page and "not found (rank 251 &gt; 200)" in page and "not rankable" in page
    assert "0.9100" in page and "0.2500" in page and "0.3750" in page  # scores, baselines
    assert "held-out view found in the top 200 for 1" in page
    assert "Fitted on train for 4 epochs (chosen on validation)" in page
    assert "data:image/png;base64," in page
    assert page.count(predictions.HIT_STYLE) == 1  # the found target is highlighted


def test_titles_come_from_the_model_directory_corpus(tmp_path):
    pd.DataFrame({"article_id": ["a1", "a2"], "title": ["One", None]}).to_parquet(tmp_path / "articles.parquet")
    assert predictions.read_titles(tmp_path / "articles.parquet") == {"a1": "One", "a2": ""}
    assert predictions.read_titles(tmp_path / "absent.parquet") == {}
