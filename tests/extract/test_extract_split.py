"""The split protocols of sql/training_examples.sql: a global time cut, and per-user leave-last-out.

Four users view over four days up to as_of 2024-01-05 00:00; with one-day windows T_test is
2024-01-04 00:00 and T_val 2024-01-03 00:00. Under the time split every view from T_test on is
test (u1 has two there, u3 none), every view in [T_val, T_test) validation, the rest train,
whoever made them; under per-user each user's last view is test and the one before validation.
"""

from __future__ import annotations

import json

import pytest
from extract_testdata import articles_table, events_table, run_extract

from components.extract import extract
from homefeed import features

ARTICLES = [{"article_id": f"a{i}", "created_at": f"2023-12-{20 + i} 00:00", "status": "active"} for i in range(1, 9)]
EVENTS = [
    ("u1", "a1", "2024-01-01 10:00"),
    ("u1", "a2", "2024-01-02 10:00"),
    ("u1", "a3", "2024-01-03 10:00"),
    ("u1", "a4", "2024-01-04 01:00"),
    ("u1", "a5", "2024-01-04 20:00"),
    ("u2", "a1", "2024-01-01 12:00"),
    ("u2", "a6", "2024-01-02 23:59"),
    ("u2", "a7", "2024-01-04 00:00"),  # exactly T_test: test
    ("u3", "a2", "2024-01-01 09:00"),
    ("u3", "a3", "2024-01-01 11:00"),
    ("u3", "a8", "2024-01-03 00:00"),  # exactly T_val: validation (u3's last view: test under per-user)
    ("u4", "a5", "2024-01-01 08:00"),
    ("u4", "a6", "2024-01-01 09:00"),
    ("u4", "a7", "2024-01-05 00:00"),  # as_of itself: test
]
AS_OF = "2024-01-05T00:00:00Z"


def _splits(result) -> dict[tuple[str, str], str]:
    return {(r["user_id"], r["label"]): r["split"] for r in result.training_examples.to_pylist()}


def test_time_split_cuts_every_user_at_the_same_instants(bq_client, tmp_path):
    summary, result = run_extract(
        bq_client,
        "split_time",
        events_table(EVENTS),
        articles_table(ARTICLES),
        tmp_path / "out",
        split="time",
        as_of=AS_OF,
    )
    assert _splits(result) == {
        ("u1", "a2"): "train",
        ("u1", "a3"): "validation",
        ("u1", "a4"): "test",
        ("u1", "a5"): "test",
        ("u2", "a6"): "train",
        ("u2", "a7"): "test",
        ("u3", "a3"): "train",
        ("u3", "a8"): "validation",
        ("u4", "a6"): "train",
        ("u4", "a7"): "test",
    }
    # Every view after T_test is test, and no earlier split holds a later view.
    test_from = summary.split["test_from"]
    assert summary.split == {
        "protocol": "time",
        "validation_from": "2024-01-03T00:00:00+00:00",
        "test_from": "2024-01-04T00:00:00+00:00",
        "test_to": "2024-01-05T00:00:00+00:00",
    }
    for row in result.training_examples.to_pylist():
        assert (row["viewed_at"].isoformat() >= test_from) == (row["split"] == features.TEST_SPLIT)
    # The history of a test view still holds the views before it, test views included (u1's a5).
    histories = {(r["user_id"], r["label"]): r["history"] for r in result.training_examples.to_pylist()}
    assert histories[("u1", "a5")][:2] == ["a4", "a3"]
    assert result.summary["split"]["protocol"] == "time"
    assert [result.summary["rows"][s] for s in features.SPLITS] == [4, 2, 4]


def test_window_sizes_move_the_cuts(bq_client, tmp_path):
    summary, result = run_extract(
        bq_client,
        "split_days",
        events_table(EVENTS),
        articles_table(ARTICLES),
        tmp_path / "out",
        split="time",
        as_of=AS_OF,
        test_days=0.5,
        validation_days=2.0,
    )
    splits = _splits(result)
    assert splits[("u1", "a4")] == "validation"  # 2024-01-04 01:00 < T_test = 2024-01-04 12:00
    assert splits[("u1", "a5")] == "test"
    assert splits[("u1", "a3")] == "validation"  # >= T_val = 2024-01-02 12:00
    assert splits[("u1", "a2")] == "train"  # 2024-01-02 10:00
    assert summary.split["validation_from"] == "2024-01-02T12:00:00+00:00"


def test_per_user_split_holds_out_each_users_last_view(bq_client, tmp_path):
    summary, result = run_extract(
        bq_client, "split_user", events_table(EVENTS), articles_table(ARTICLES), tmp_path / "out", split="per-user"
    )
    splits = _splits(result)
    assert splits[("u1", "a5")] == "test" and splits[("u1", "a4")] == "validation" and splits[("u1", "a3")] == "train"
    assert splits[("u3", "a8")] == "test"
    assert summary.split == {"protocol": "per-user"}


def test_an_empty_window_is_refused_naming_it(bq_client, tmp_path):
    with pytest.raises(ValueError, match=r"validation window \[2024-01-04T22:00:00\+00:00, .*14 views"):
        run_extract(
            bq_client,
            "split_empty",
            events_table(EVENTS),
            articles_table(ARTICLES),
            tmp_path / "out",
            split="time",
            as_of=AS_OF,
            test_days=1 / 24,
            validation_days=1 / 24,
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        (None, "time"),
        ({"source": {"generator": "homefeed.sample.marketplace"}}, "time"),
        ({"source": {"split": "per-user"}}, "per-user"),
        ({"source": {"split": "time"}}, "time"),
    ],
)
def test_the_datasets_manifest_picks_the_default_split(tmp_path, manifest, expected):
    events = tmp_path / "events.parquet"
    if manifest is not None:
        (tmp_path / "dataset.json").write_text(json.dumps(manifest))
    assert extract.dataset_split(events) == expected


def test_an_unknown_split_in_the_manifest_is_an_error(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"source": {"split": "random"}}))
    with pytest.raises(ValueError, match="source.split is 'random'"):
        extract.dataset_split(tmp_path / "events.parquet")
