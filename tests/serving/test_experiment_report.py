"""The experiment report (serving/experiments/report.py, stats.py) on exposures written by the real log."""

from __future__ import annotations

import math
import subprocess

import numpy as np
import pandas as pd
import pytest

from serving.experiments import stats
from serving.experiments.exposures import Exposure, ExposureLog, read_exposures
from serving.experiments.report import build_report, parse_window, read_views
from tests.support.commands import candidates_command

T0 = pd.Timestamp("2026-06-01T12:00:00Z")


def test_chi2_sf_matches_known_quantiles():
    # 95th percentiles of chi-square with 1..4 degrees of freedom, and a few exact values.
    for df, q95 in ((1, 3.841459), (2, 5.991465), (3, 7.814728), (4, 9.487729)):
        assert stats.chi2_sf(q95, df) == pytest.approx(0.05, abs=1e-5)
    assert stats.chi2_sf(0.0, 3) == pytest.approx(1.0)
    assert stats.chi2_sf(10.0, 2) == pytest.approx(math.exp(-5))


def test_sample_ratio_check():
    assert stats.sample_ratio_check([5000, 5000], [0.5, 0.5])[1] == pytest.approx(1.0)
    assert stats.sample_ratio_check([5300, 4700], [0.5, 0.5])[1] < 1e-8
    assert stats.sample_ratio_check([2970, 7030], [0.3, 0.7])[1] > 0.3


def test_bootstrap_sums_in_chunks_match_one_draw():
    values = np.arange(30, dtype=np.float64).reshape(10, 3)
    sums = stats.bootstrap_sums(values, 200, np.random.default_rng(1))
    assert sums.shape == (200, 3)
    assert sums[:, 0].mean() == pytest.approx(values[:, 0].sum(), rel=0.05)


def test_parse_window():
    assert parse_window("24h") == pd.Timedelta(hours=24) and parse_window("90s") == pd.Timedelta(seconds=90)
    with pytest.raises(ValueError, match="--window '24x'"):
        parse_window("24x")


def log_exposures(directory, rows):
    """Writes `rows` (user, arm, share, ids, served_at, fallback, overridden) through the real log."""
    log = ExposureLog(directory, "exp1", rows_per_file=7)
    for i, (user, arm, share, ids, served_at, fallback, overridden) in enumerate(rows):
        log.record(
            Exposure(f"r{i}", user, arm, overridden, share, "v1", fallback, served_at.timestamp(), lambda ids=ids: ids)
        )
    log.close()
    return read_exposures(directory)


def test_attribution_by_hand(tmp_path):
    """Two users per arm; views inside and outside the window, of exposed and other listings."""
    rows = [
        ("c1", "control", 0.5, ["p1", "p2"], T0, True, False),
        ("c2", "control", 0.5, ["p1", "p2"], T0, True, False),
        ("m1", "model", 0.5, ["a1", "a2", "a3"], T0, False, False),
        ("m2", "model", 0.5, ["a4"], T0, False, False),
        ("m2", "model", 0.5, ["a5"], T0 + pd.Timedelta(hours=30), False, False),
        ("c1", "model", 0.5, ["a9"], T0, False, True),  # ?arm=: left out
    ]
    exposures = log_exposures(tmp_path / "exposures", rows)
    views = pd.DataFrame(
        [
            ("c1", "p1", T0 + pd.Timedelta(hours=1)),  # attributed
            ("c1", "x", T0 + pd.Timedelta(hours=2)),  # not exposed
            ("c2", "p2", T0 - pd.Timedelta(hours=1)),  # before the exposure: not counted at all
            ("m1", "a1", T0 + pd.Timedelta(hours=1)),
            ("m1", "a2", T0 + pd.Timedelta(hours=23)),
            ("m1", "a3", T0 + pd.Timedelta(hours=25)),  # after the window: not counted at all
            ("m1", "y", T0 + pd.Timedelta(hours=3)),  # in the window, not exposed: a view, not attributed
            ("m2", "a4", T0 + pd.Timedelta(hours=2)),
            ("m2", "a5", T0 + pd.Timedelta(hours=31)),
            ("zz", "a1", T0 + pd.Timedelta(hours=1)),  # never exposed
        ],
        columns=["user_id", "article_id", "viewed_at"],
    )
    articles = pd.DataFrame(
        {
            "article_id": ["p1", "p2", "a1", "a2", "a3", "a4", "a5", "x"],
            "created_at": [T0 - pd.Timedelta(days=30)] * 2 + [T0 - pd.Timedelta(days=1)] * 5 + [T0],
        }
    )
    report = build_report(exposures, views, pd.Timedelta(hours=24), articles, new_days=7, replicates=200)
    assert report.control == "control" and report.overridden_exposures == 1
    control, model = report.arms
    assert (control.users, control.exposures, control.views) == (2, 2, 1)
    assert control.views_per_user == 0.5 and control.exposed_view_share == pytest.approx(1 / 2)
    assert control.new_listing_share == 0.0 and control.coverage == pytest.approx(2 / 8)
    assert (model.users, model.exposures, model.views) == (2, 3, 4)
    assert model.views_per_user == 2.0 and model.exposed_view_share == pytest.approx(4 / 5)
    assert model.new_listing_share == 1.0 and model.coverage == pytest.approx(5 / 8)
    views_per_user = next(d for d in report.differences if d.metric == "views_per_user")
    assert views_per_user.difference == pytest.approx(1.5) and views_per_user.relative == pytest.approx(3.0)
    assert views_per_user.low <= 1.5 <= views_per_user.high


def test_the_report_finds_a_planted_lift_and_no_lift_in_aa(tmp_path):
    """Per-user Poisson views with a known +30 % in one arm: the interval covers it and excludes 0; A/A covers 0."""
    rng = np.random.default_rng(3)
    rows, views = [], []
    for i in range(4000):
        arm = "model" if i % 2 else "control"
        user = f"u{i}"
        rows.append((user, arm, 0.5, ["a1", "a2", "a3", "a4"], T0, arm == "control", False))
        for article in rng.permutation(["a1", "a2", "a3", "a4"])[: min(4, rng.poisson(1.3 if arm == "model" else 1.0))]:
            views.append((user, article, T0 + pd.Timedelta(minutes=5)))
    exposures = log_exposures(tmp_path / "e", rows)
    frame = pd.DataFrame(views, columns=["user_id", "article_id", "viewed_at"])
    report = build_report(exposures, frame, pd.Timedelta(hours=1), replicates=500)
    lift = next(d for d in report.differences if d.metric == "views_per_user")
    assert lift.significant and lift.relative_low < 0.30 < lift.relative_high, lift
    assert report.srm_p_value > 0.01
    # A/A: the same users split in two halves of the control.
    aa = [
        (u, "A" if int(u[1:]) % 4 < 2 else "B", 0.5, ids, t, f, o)
        for u, _, _, ids, t, f, o in rows
        if int(u[1:]) % 2 == 0
    ]
    aa_report = build_report(log_exposures(tmp_path / "aa", aa), frame, pd.Timedelta(hours=1), replicates=500)
    assert not next(d for d in aa_report.differences if d.metric == "views_per_user").significant


def test_a_skewed_split_is_flagged(tmp_path):
    rows = [(f"u{i}", "a" if i % 10 < 6 else "b", 0.5, ["x"], T0, False, False) for i in range(2000)]
    report = build_report(
        log_exposures(tmp_path, rows),
        pd.DataFrame(columns=["user_id", "article_id", "viewed_at"]).astype({"viewed_at": "datetime64[ns, UTC]"}),
        pd.Timedelta(hours=1),
        replicates=100,
    )
    assert report.srm and any("sample ratio mismatch" in note for note in report.notes)


def test_the_command_prints_and_writes_the_page(tmp_path):
    rows = [(f"u{i}", "m" if i % 2 else "c", 0.5, ["a1", "a2"], T0, i % 2 == 0, False) for i in range(200)]
    log_exposures(tmp_path / "exposures", rows)
    events = tmp_path / "events.parquet"
    pd.DataFrame(
        {"user_id": [f"u{i}" for i in range(0, 200, 3)], "article_id": "a1", "viewed_at": T0 + pd.Timedelta(minutes=1)}
    ).to_parquet(events)
    result = subprocess.run(
        candidates_command(
            "experiment",
            "report",
            "--exposures",
            tmp_path / "exposures",
            "--events",
            events,
            "--window",
            "2h",
            "--replicates",
            "200",
            "--out",
            tmp_path / "page",
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "views_per_user" in result.stdout and "sample ratio check" in result.stdout
    page = (tmp_path / "page" / "report.html").read_text()
    assert "lift.png" in page and (tmp_path / "page" / "lift.png").stat().st_size > 1000
    bad = subprocess.run(
        candidates_command(
            "experiment", "report", "--exposures", tmp_path / "exposures", "--events", tmp_path / "none.parquet"
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "none.parquet" in bad.stderr


def test_read_views_names_missing_columns(tmp_path):
    path = tmp_path / "e.parquet"
    pd.DataFrame({"user_id": ["u"], "article_id": ["a"]}).to_parquet(path)
    with pytest.raises(ValueError, match="lacks column\\(s\\) viewed_at"):
        read_views(path)
