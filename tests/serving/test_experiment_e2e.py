"""An experiment end to end on simulated users: the real HTTP service serves a model arm, a popularity arm and
a copy of the model arm; the users of homefeed/sample/response.py answer what they were shown; the report
finds the lift the simulation knows (its exact expectation) within its interval, and none between the two
copies of the model (A/A)."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml

from components.build_index.build import build_model_index
from homefeed.config import IndexConfig
from homefeed.layout import extract_dir as extract_layout
from homefeed.sample.response import ResponseConfig, ResponseModel, read_exposure_lists
from serving.experiments.exposures import read_exposures
from serving.experiments.report import build_report
from serving.http.settings import ServiceSettings
from tests.support import model_factory
from tests.support.commands import candidates_command
from tests.support.service import running_app

N_ARTICLES = 600
N_USERS = 2400
K = 20
RESPONSE = ResponseConfig(seed=7, base_rate=0.06)


@pytest.fixture(scope="module")
def taste_model(saved_models, tmp_path_factory):
    """A model whose embedding follows the listings' categories and regions, and users whose histories
    follow their simulated taste: the model arm has something to find."""
    path, table = saved_models[0]
    target = tmp_path_factory.mktemp("experiment") / "taste"
    model_factory.make_model_dir(target, path, table, version="taste", n_articles=N_ARTICLES, n_users=2)
    ids = model_factory.article_ids(N_ARTICLES)
    vectors = np.load(target / "article_vectors.npy")
    # Category and region from the article's own vector: listings of a category lie close together.
    categories = [model_factory.CATEGORIES[i] for i in np.argmax(vectors[:, :4], axis=1)]
    regions = [model_factory.REGIONS[int(v > 0)] for v in vectors[:, 4]]
    corpus = pd.read_parquet(target / "articles.parquet")
    corpus["category"], corpus["region"] = categories, regions
    corpus.to_parquet(target / "articles.parquet", index=False)
    response = ResponseModel(corpus, RESPONSE)
    rng = np.random.default_rng(11)
    rows = []
    for u in range(N_USERS):
        user = f"u{u:05d}"
        weights = response.probabilities(user, ids) / 0.5 ** (np.arange(N_ARTICLES) / RESPONSE.position_half_life)
        history = list(rng.choice(ids, size=6, replace=False, p=weights / weights.sum()))
        rows.append(
            {
                "user_id": user,
                "history": history,
                "history_category": [categories[int(a[1:])] for a in history],
                "history_region": [regions[int(a[1:])] for a in history],
                "last_viewed_at": pd.Timestamp("2024-06-01", tz="UTC"),
            }
        )
    model_factory.write_histories(pd.DataFrame(rows), target / extract_layout.USER_HISTORIES_FILE)
    model_factory.write_manifest(target, "taste")
    build_model_index(target, IndexConfig())
    return target, response


def test_simulated_users_show_the_known_lift(taste_model, tmp_path):
    model_dir, response = taste_model
    exposures = tmp_path / "exposures"
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(
        yaml.safe_dump(
            {
                "name": "sim",
                "salt": "sim-salt",
                "exposure_top_n": K,
                "exposure_dir": str(exposures),
                "arms": [
                    {"name": "control", "model": "popularity", "share": 0.34},
                    {"name": "model", "model": str(model_dir), "share": 0.33},
                    {"name": "model_again", "model": str(model_dir), "share": 0.33},
                ],
            }
        )
    )
    settings = ServiceSettings(model=model_dir, experiment=experiment)
    with running_app(settings) as client:
        for u in range(N_USERS):
            answer = client.get(f"/v1/users/u{u:05d}/candidates?k={K}")
            assert answer.status_code == 200, answer.text
    lists = read_exposure_lists(exposures)
    assert len(lists) == N_USERS

    # The users answer (through the command, as a user runs it), and the report reads the result.
    articles = model_dir / "articles.parquet"
    events = tmp_path / "events.parquet"
    result = subprocess.run(
        candidates_command(
            "simulate-views",
            "--exposures",
            exposures,
            "--articles",
            articles,
            "--out",
            events,
            "--seed",
            "1",
            "--taste-seed",
            str(RESPONSE.seed),
            "--base-rate",
            str(RESPONSE.base_rate),
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    views = pd.read_parquet(events)

    table = read_exposures(exposures)
    arm_of = dict(zip(table["user_id"].to_pylist(), table["arm"].to_pylist()))
    expected = response.expected(lists)
    truth = expected.groupby(expected.index.map(arm_of)).mean()
    true_lift = truth["model"] / truth["control"] - 1
    assert true_lift > 0.3, truth  # the simulation does know a real lift

    window = pd.Timedelta(hours=2)
    report = build_report(table, views, window, replicates=1000, seed=0)
    assert report.control == "control" and not report.srm
    lift = next(d for d in report.differences if d.arm == "model" and d.metric == "views_per_user")
    assert lift.relative_low <= true_lift <= lift.relative_high, (lift, true_lift)
    assert lift.relative_low > 0

    aa = build_report(table, views, window, control="model", replicates=1000, seed=0)
    same = next(d for d in aa.differences if d.arm == "model_again" and d.metric == "views_per_user")
    true_aa = truth["model_again"] / truth["model"] - 1
    assert same.relative_low <= true_aa <= same.relative_high, (same, true_aa)
    assert abs(true_aa) < 0.1  # two halves of the same arm: only the users differ
    assert not same.significant, same  # no difference found between the copies
    print(
        f"true lift {true_lift:+.3f}, estimated {lift.relative:+.3f} [{lift.relative_low:+.3f}, {lift.relative_high:+.3f}]"
    )
    print(
        f"A/A true {true_aa:+.3f}, estimated {same.relative:+.3f} [{same.relative_low:+.3f}, {same.relative_high:+.3f}]"
    )
