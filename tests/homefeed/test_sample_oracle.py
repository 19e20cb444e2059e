"""The sample generator's oracle: what it knows about each user, written beside the tables, and
ranking by it beats every baseline under the evaluation's protocol."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from homefeed.sample.marketplace import churn_config, generate, write_sample_data
from homefeed.sample.oracle import ORACLE_FILE, Oracle

CONFIG = churn_config(users=300, articles=1500, seed=7)


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("oracle") / "input"
    summary = write_sample_data(out, CONFIG)
    assert summary["oracle_path"] == str(out / ORACLE_FILE)
    return out


def test_writing_the_oracle_leaves_the_tables_as_the_seed_draws_them(sample_dir):
    events, articles = generate(CONFIG)
    written = pd.read_parquet(sample_dir / "events.parquet")
    assert written["article_id"].tolist() == events["article_id"].tolist()
    assert written["user_id"].tolist() == events["user_id"].tolist()
    oracle = Oracle.load(sample_dir)
    assert oracle.article_ids.tolist() == articles["article_id"].tolist()
    assert (oracle.user_index(events["user_id"].unique()) >= 0).all()
    taste = oracle.arrays["taste"]
    assert taste.shape == (CONFIG.users, 12) and np.allclose(taste.sum(axis=1), 1.0)


def test_scores_are_probabilities_over_the_listings_live_at_the_time(sample_dir):
    events, articles = generate(CONFIG)
    oracle = Oracle.load(sample_dir)
    created = articles["created_at"].map(lambda t: t.value / 1e6).to_numpy()
    removed = articles["removed_at"].map(lambda t: t.value / 1e6 if pd.notna(t) else np.inf).to_numpy()
    for _, view in events.sample(50, random_state=0).iterrows():
        t = view["viewed_at"].value / 1e6
        scores = oracle.scores(int(oracle.user_index([view["user_id"]])[0]), t)
        live = (created <= t) & (t < removed)
        assert (scores[~live] == 0).all() and (scores >= 0).all() and scores.sum() <= 1.0 + 1e-9
        assert scores[oracle.article_index([view["article_id"]])[0]] > 0  # what was viewed was live and liked


def test_a_missing_or_malformed_oracle_is_a_clear_error(tmp_path, sample_dir):
    with pytest.raises(FileNotFoundError, match="no oracle"):
        Oracle.load(tmp_path)
    with np.load(sample_dir / ORACLE_FILE) as data:
        arrays = {name: data[name] for name in data.files}
    np.savez(tmp_path / "bad.npz", **{**arrays, "taste": arrays["taste"][:, :3]})
    with pytest.raises(ValueError, match=r"taste has shape \(300, 3\), expected \(300, 12\)"):
        Oracle.load(tmp_path / "bad.npz")


@pytest.mark.slow
def test_ranking_by_the_oracle_beats_every_baseline_under_the_evaluation_protocol(sample_dir, tmp_path):
    from benchmarks.quality_marketplace import ORACLE, protocol_ranks, recall_table
    from components.extract.extract import extract_local

    extract_local(sample_dir / "events.parquet", sample_dir / "articles.parquet", tmp_path / "extract")
    ranked = protocol_ranks(tmp_path / "extract", Oracle.load(sample_dir))
    table = recall_table(ranked["users"], ranked["ranks"])
    assert set(table) >= {ORACLE, "popularity", "trending_1d", "item_knn", "category_region"}, sorted(table)
    for k in (10, 50):
        best = max((figures[f"recall@{k}"], name) for name, figures in table.items() if name != ORACLE)
        assert table[ORACLE][f"recall@{k}"] > best[0], (k, best, table[ORACLE])
        # Every baseline is a share below 1 of the best achievable.
        assert all(f[f"share_of_oracle@{k}"] < 1.0 for name, f in table.items() if name != ORACLE)
