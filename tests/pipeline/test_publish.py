"""The publish gate: floor, regression tolerance, atomic LATEST, half-written models never live."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from components.build_index.build import build_model_index
from components.publish import publish
from components.publish.publish import IncompleteModelError, publish_model
from homefeed.config import IndexConfig, PublishConfig
from tests.support import model_factory

_SAVED: dict[str, tuple[Path, object]] = {}


@pytest.fixture(scope="module", autouse=True)
def _saved_model(tmp_path_factory):
    """One real SavedModel (tests/support/model_factory.py), copied into every model directory."""
    path = tmp_path_factory.mktemp("publish_saved_model") / "s0"
    _SAVED["model"] = (path, model_factory.save_hashing_model(path, 8, 0))


def make_model_dir(
    root: Path,
    version: str,
    recall: float,
    *,
    index: bool = True,
    manifest: bool = True,
    protocol: dict | None = None,
    extra: dict | None = None,
    fit: dict | None = None,
) -> Path:
    """A finished model directory made by the real writers: the model factory's model directory
    (SavedModel, vectors, ids, titles, manifest), `build_model_index`, and an evaluation.json."""
    saved_model, table = _SAVED["model"]
    model = model_factory.make_model_dir(
        root / f"model-{version}", saved_model, table, version=version, n_articles=60, n_users=6, with_histories=False
    )
    if index:
        build_model_index(model, IndexConfig())
    evaluation = {"recall@200": recall, "recall@10": recall / 4}
    if protocol is not None:
        evaluation["protocol"] = protocol
    evaluation.update(extra or {})
    (model / "evaluation.json").write_text(json.dumps(evaluation))
    if fit is not None:  # what the model was trained on (trainer/training/train.py's metrics.json)
        (model / "metrics.json").write_text(json.dumps({"fit": fit}))
    if not manifest:
        (model / "manifest.json").unlink()
    return model


@pytest.fixture
def histories(tmp_path: Path) -> Path:
    path = tmp_path / "user_histories.parquet"
    path.write_bytes(b"PAR1-not-read-by-the-gate")
    return path


def test_first_model_above_floor_is_published(tmp_path, histories):
    root = tmp_path / "published"
    decision = publish_model(make_model_dir(tmp_path, "v1", 0.40), root, PublishConfig(0.1, 0.01), histories)

    assert decision.published and decision.version == "v1" and decision.previous_version is None
    assert (root / "LATEST").read_text() == "v1\n"
    live = root / "versions" / "v1"
    assert (live / "saved_model" / "saved_model.pb").is_file()
    assert (live / "index" / "articles.faiss").is_file()
    assert (live / "user_histories.parquet").read_bytes() == histories.read_bytes()
    assert json.loads((live / "publish.json").read_text())["published"] is True
    assert publish.read_latest(root) == "v1"
    # No staging leftovers next to the version.
    assert sorted(p.name for p in (root / "versions").iterdir()) == ["v1"]


def test_better_and_slightly_worse_models_replace_latest(tmp_path, histories):
    root = tmp_path / "published"
    config = PublishConfig(min_recall_at_200=0.1, max_regression=0.02)
    publish_model(make_model_dir(tmp_path, "v1", 0.40), root, config, histories)
    better = publish_model(make_model_dir(tmp_path, "v2", 0.45), root, config, histories)
    within = publish_model(make_model_dir(tmp_path, "v3", 0.44), root, config, histories)

    assert better.published and better.previous_version == "v1" and better.previous_recall_at_200 == 0.40
    assert within.published and within.previous_version == "v2"
    assert publish.read_latest(root) == "v3"


def test_regression_beyond_tolerance_is_refused(tmp_path, histories):
    root = tmp_path / "published"
    config = PublishConfig(min_recall_at_200=0.1, max_regression=0.01)
    publish_model(make_model_dir(tmp_path, "v1", 0.40), root, config, histories)
    decision = publish_model(make_model_dir(tmp_path, "v2", 0.385), root, config, histories)

    assert not decision.published
    assert "worse than the published v1" in decision.reason and "0.0150" in decision.reason
    assert publish.read_latest(root) == "v1"
    assert not (root / "versions" / "v2").exists()
    log = [json.loads(line) for line in (root / "publish_log.jsonl").read_text().splitlines()]
    assert [entry["published"] for entry in log] == [True, False]


def _paired(
    published: str,
    published_recall: float,
    ratio: float,
    interval: list[float],
    baselines: dict,
    fresh: tuple[float, float] = (0.3, 0.2),
) -> dict:
    """evaluation.json figures of a candidate whose evaluation re-ran `published` on its views;
    `fresh`: (model, trending_1d) recall@200 on the freshest listings' views."""
    return {
        "published": {"model_version": published, "recall@200": published_recall},
        "intervals": {"ratio": {"model/published": {"recall@200": {"ratio": ratio, "interval": interval}}}},
        "baselines": {name: {"recall@200": r} for name, r in baselines.items()},
        "fresh": {"model": {"recall@200": fresh[0]}, "trending_1d": {"recall@200": fresh[1]}},
    }


def test_the_gate_compares_the_two_models_on_the_same_views_not_stored_figures(tmp_path, histories):
    # v1 scored 0.40 on its own (older) test views; on v2's views it scores 0.29 and v2 0.30. The
    # stored figures would refuse v2 (0.10 worse); pairwise it is not worse, and beats the baselines.
    root = tmp_path / "published"
    config = PublishConfig(min_recall_at_200=0.1, max_regression=0.01)
    publish_model(make_model_dir(tmp_path, "v1", 0.40), root, config, histories)
    extra = _paired("v1", 0.29, 1.034, [0.97, 1.09], {"popularity": 0.12, "item_knn": 0.25})
    decision = publish_model(make_model_dir(tmp_path, "v2", 0.30, extra=extra), root, config, histories)
    assert decision.published, decision.reason
    assert "same test views" in decision.reason and "[0.970, 1.090]" in decision.reason
    assert decision.paired_ratio == 1.034 and decision.best_baseline == "item_knn"
    assert publish.read_latest(root) == "v2"


@pytest.mark.parametrize(
    "ratio, interval, baselines, fresh, refusal",
    [
        # Higher than v1's stored 0.40, but worse than v1 on the same views beyond the interval.
        (0.9, [0.85, 0.95], {"popularity": 0.12}, (0.3, 0.2), "worse than the published v1 beyond the paired interval"),
        # Not worse than v1, but item-kNN does better on the same views.
        (1.0, [0.95, 1.05], {"popularity": 0.12, "item_knn": 0.5}, (0.3, 0.2), "does not beat the best baseline"),
        # Better overall, but trending finds the freshest listings better.
        (1.0, [0.95, 1.05], {"popularity": 0.12}, (0.2, 0.3), "loses to trending"),
    ],
)
def test_a_candidate_worse_pairwise_below_the_best_baseline_or_below_trending_on_fresh_listings_is_refused(
    tmp_path, histories, ratio, interval, baselines, fresh, refusal
):
    root = tmp_path / "published"
    config = PublishConfig(min_recall_at_200=0.1, max_regression=0.01)
    publish_model(make_model_dir(tmp_path, "v1", 0.40), root, config, histories)
    extra = _paired("v1", 0.45 / ratio, ratio, interval, baselines, fresh)
    decision = publish_model(make_model_dir(tmp_path, "v2", 0.45, extra=extra), root, config, histories)
    assert not decision.published and refusal in decision.reason, decision.reason
    assert publish.read_latest(root) == "v1"


def test_paired_figures_of_another_version_are_not_used(tmp_path, histories):
    root = tmp_path / "published"
    config = PublishConfig(min_recall_at_200=0.1, max_regression=0.01)
    publish_model(make_model_dir(tmp_path, "v1", 0.40), root, config, histories)
    extra = _paired("v0", 0.40, 0.5, [0.4, 0.6], {"popularity": 0.12})
    decision = publish_model(make_model_dir(tmp_path, "v2", 0.41, extra=extra), root, config, histories)
    assert decision.published and decision.paired_ratio is None
    assert "not compared on the same ones" in decision.reason


def test_recalls_measured_under_different_protocols_are_not_compared(tmp_path, histories):
    # The published version was evaluated at each view's own age, the candidate at the serving age:
    # 0.385 vs 0.40 says nothing about which model is better, so only the floor applies.
    root = tmp_path / "published"
    config = PublishConfig(min_recall_at_200=0.1, max_regression=0.01)
    old = {"split": "test", "example_age": "examples"}
    new = {"split": "test", "example_age": "serving"}
    publish_model(make_model_dir(tmp_path, "v1", 0.40, protocol=old), root, config, histories)
    decision = publish_model(make_model_dir(tmp_path, "v2", 0.385, protocol=new), root, config, histories)
    assert decision.published and "another protocol" in decision.reason and "not compared" in decision.reason
    assert publish.read_latest(root) == "v2"
    # Under the same protocol the regression rule holds again, and the floor always does.
    assert not publish_model(make_model_dir(tmp_path, "v3", 0.37, protocol=new), root, config, histories).published
    assert not publish_model(make_model_dir(tmp_path, "v4", 0.05, protocol=old), root, config, histories).published
    assert publish.read_latest(root) == "v2"


def test_below_floor_is_refused_even_with_nothing_published(tmp_path, histories):
    root = tmp_path / "published"
    decision = publish_model(make_model_dir(tmp_path, "v1", 0.04), root, PublishConfig(0.05, 0.01), histories)

    assert not decision.published and "below the floor 0.0500" in decision.reason
    assert publish.read_latest(root) is None
    assert not (root / "LATEST").exists()
    assert list((root / "versions").iterdir()) == []


def test_same_version_is_not_published_twice(tmp_path, histories):
    root = tmp_path / "published"
    model = make_model_dir(tmp_path, "v1", 0.40)
    assert publish_model(model, root, PublishConfig(0.1, 0.01), histories).published
    again = publish_model(model, root, PublishConfig(0.1, 0.01), histories)
    assert not again.published and "already" in again.reason


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("no_manifest", "manifest.json is missing"),
        ("no_format_version", "format_version None is not 1"),
        ("bad_files_table", "expected {'bytes': int, 'sha256': str}"),
        ("no_index", "no index at"),
        ("no_evaluation", "evaluation"),
        ("index_for_other_model", "index was built for"),
        ("bad_recall", "expected a number in [0, 1]"),
        ("vectors_changed", "article_vectors.npy does not match its sha256"),
        ("index_for_other_vectors", "built from article vectors 000000000000"),
        ("file_truncated", "saved_model.pb has 3 bytes"),
        ("index_file_missing", "articles.faiss is missing"),
    ],
)
def test_half_written_model_is_refused_and_nothing_changes(tmp_path, histories, breakage, message):
    root = tmp_path / "published"
    publish_model(make_model_dir(tmp_path, "v1", 0.40), root, PublishConfig(0.1, 0.01), histories)
    broken = make_model_dir(tmp_path, "v2", 0.50, manifest=breakage != "no_manifest", index=breakage != "no_index")
    if breakage == "no_evaluation":
        (broken / "evaluation.json").unlink()
    if breakage == "index_for_other_model":
        (broken / "index" / "index_manifest.json").write_text(json.dumps({"model_version": "v0"}))
    if breakage == "vectors_changed":  # same size, other bytes
        vectors = broken / "article_vectors.npy"
        vectors.write_bytes(os.urandom(vectors.stat().st_size))
    if breakage in ("no_format_version", "bad_files_table"):  # what the service refuses, publish refuses
        manifest = json.loads((broken / "manifest.json").read_text())
        if breakage == "no_format_version":
            del manifest["format_version"]
        else:
            manifest["files"]["article_ids.txt"] = "yes"
        (broken / "manifest.json").write_text(json.dumps(manifest))
    if breakage == "index_for_other_vectors":
        (broken / "index" / "index_manifest.json").write_text(
            json.dumps({"model_version": "v2", "article_vectors_sha256": "0" * 64})
        )
    if breakage == "file_truncated":
        (broken / "saved_model" / "saved_model.pb").write_bytes(b"\x08\x01\x02")
    if breakage == "index_file_missing":
        (broken / "index" / "articles.faiss").unlink()
    if breakage == "bad_recall":
        (broken / "evaluation.json").write_text(json.dumps({"recall@200": "high"}))

    with pytest.raises(IncompleteModelError, match=message.replace("[", r"\[").replace("]", r"\]")):
        publish_model(broken, root, PublishConfig(0.1, 0.01), histories)
    assert publish.read_latest(root) == "v1"
    assert sorted(p.name for p in (root / "versions").iterdir()) == ["v1"]


def test_crash_while_copying_leaves_latest_and_versions_untouched(tmp_path, histories, monkeypatch):
    root = tmp_path / "published"
    publish_model(make_model_dir(tmp_path, "v1", 0.40), root, PublishConfig(0.1, 0.01), histories)

    real_copy = publish._copy_file
    copied = []

    def copy_then_fail(src, dst, *args, **kwargs):
        if len(copied) == 3:  # part-way through the version's files
            raise OSError(28, "No space left on device")
        copied.append(src)
        return real_copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(publish, "_copy_file", copy_then_fail)
    with pytest.raises(OSError, match="No space left"):
        publish_model(make_model_dir(tmp_path, "v2", 0.50), root, PublishConfig(0.1, 0.01), histories)

    assert publish.read_latest(root) == "v1"
    assert sorted(p.name for p in (root / "versions").iterdir()) == ["v1"]  # staging removed


def test_latest_is_never_seen_empty_or_partial_while_being_replaced(tmp_path, histories):
    root = tmp_path / "published"
    config = PublishConfig(0.0, 1.0)
    publish_model(make_model_dir(tmp_path, "v0", 0.40), root, config, histories)
    models = [make_model_dir(tmp_path, f"v{i}", 0.40) for i in range(1, 13)]
    seen: set[str] = set()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            seen.add((root / "LATEST").read_text())  # FileNotFoundError here would fail the test

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for model in models:
            publish_model(model, root, config, histories)
    finally:
        stop.set()
        thread.join()
    assert seen <= {f"v{i}\n" for i in range(13)}
    assert publish.read_latest(root) == "v12"
    # Every version LATEST ever named is complete on disk.
    for text in seen:
        publish.check_model_dir(root / "versions" / text.strip())


def test_unreadable_published_evaluation_falls_back_to_the_floor(tmp_path, histories):
    root = tmp_path / "published"
    publish_model(make_model_dir(tmp_path, "v1", 0.40), root, PublishConfig(0.1, 0.01), histories)
    (root / "versions" / "v1" / "evaluation.json").write_text("{")
    decision = publish_model(make_model_dir(tmp_path, "v2", 0.2), root, PublishConfig(0.1, 0.01), histories)
    assert decision.published and "no readable recall" in decision.reason


def test_url_publish_root_is_refused_with_advice(tmp_path, histories):
    with pytest.raises(ValueError, match="gcsfuse"):
        publish_model(make_model_dir(tmp_path, "v1", 0.4), "gs://bucket/models", None, histories)


def test_missing_user_histories_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="user histories"):
        publish_model(make_model_dir(tmp_path, "v1", 0.4), tmp_path / "root", None, tmp_path / "nope.parquet")


def test_the_publish_task_assembles_its_artifacts_and_reports(tmp_path, histories):
    """components/publish: model, evaluation and index arrive as separate artifacts."""
    from components.publish.publish_artifacts import publish_artifacts, render_report

    made = make_model_dir(tmp_path, "v1", 0.40)
    model, evaluation, index, examples = (tmp_path / name for name in ("model", "evaluation", "index", "examples"))
    shutil.copytree(made, model, ignore=shutil.ignore_patterns("index", "evaluation.json"))
    evaluation.mkdir()
    shutil.copy2(made / "evaluation.json", evaluation / "evaluation.json")
    shutil.copytree(made / "index", index)
    examples.mkdir()
    shutil.copy2(histories, examples / "user_histories.parquet")
    root = tmp_path / "published"

    decision = publish_artifacts(model, evaluation, index, examples, root, PublishConfig(0.1, 0.01))
    assert decision.published and publish.read_latest(root) == "v1"
    assert (root / "versions" / "v1" / "user_histories.parquet").read_bytes() == histories.read_bytes()
    report = render_report(decision, root)
    assert report.startswith("# Published: `v1`") and "| this model | 0.4000 |" in report
    assert f"candidates serve --model {root}" in report

    again = publish_artifacts(model, evaluation, index, examples, root, PublishConfig(0.1, 0.01))
    report = render_report(again, root)
    assert report.startswith("# Not published: `v1`") and "| published `v1` (tolerance 0.0100) | 0.4000 |" in report
    assert "candidates serve" not in report
    with pytest.raises(ValueError, match="publish_root is empty"):
        publish_artifacts(model, evaluation, index, examples, "", PublishConfig(0.1, 0.01))


HELD_OUT_FIT = {"splits": ["train"], "epochs": 3, "chosen_on": "validation"}
FINAL_FIT = {
    "splits": ["train", "validation", "test"],
    "epochs": 3,
    "chosen_on": "validation, by the held-out run",
    "through": "2026-03-01T00:00:00+00:00",
}


def _slices(new: tuple[float, float], fresh: tuple[float, float]) -> dict:
    """evaluation.json's slices: (model, trending_1d) recall@200 on new listings and the freshest."""
    return {
        name: {"model": {"recall@200": pair[0]}, "trending_1d": {"recall@200": pair[1]}}
        for name, pair in (("cold_start", new), ("fresh", fresh))
    }


@pytest.mark.parametrize("new, fresh", [((0.10, 0.20), (0.3, 0.2)), ((0.3, 0.2), (0.15, 0.25))])
def test_a_first_version_losing_to_trending_on_new_or_fresh_listings_is_refused(tmp_path, histories, new, fresh):
    # Nothing published, nothing to pair with: the slices still gate.
    root = tmp_path / "published"
    model = make_model_dir(tmp_path, "v1", 0.40, extra=_slices(new, fresh))
    decision = publish_model(model, root, PublishConfig(0.1, 0.01), histories)
    assert not decision.published and "loses to trending" in decision.reason, decision.reason
    assert "trending_1d" in decision.reason and publish.read_latest(root) is None


def test_a_version_losing_to_trending_is_refused_when_compared_on_stored_figures_too(tmp_path, histories):
    root = tmp_path / "published"
    config = PublishConfig(min_recall_at_200=0.1, max_regression=0.01)
    publish_model(make_model_dir(tmp_path, "v1", 0.40), root, config, histories)
    candidate = make_model_dir(tmp_path, "v2", 0.45, extra=_slices((0.3, 0.2), (0.1, 0.3)))
    decision = publish_model(candidate, root, config, histories)
    assert not decision.published and "loses to trending" in decision.reason
    assert publish.read_latest(root) == "v1"


def test_a_final_fit_is_gated_on_the_held_out_models_figures_and_says_so(tmp_path, histories):
    """The pipeline publishes the model trained on every view, with the held-out model's evaluation."""
    from components.publish.publish_artifacts import publish_artifacts

    held_out = make_model_dir(tmp_path, "h1", 0.40, extra={"model_version": "h1", "fit": HELD_OUT_FIT})
    final = make_model_dir(tmp_path, "f1", 0.0, fit=FINAL_FIT)
    model, evaluation, index, examples = (tmp_path / name for name in ("model", "evaluation", "index", "examples"))
    shutil.copytree(final, model, ignore=shutil.ignore_patterns("index", "evaluation.json"))
    evaluation.mkdir()
    shutil.copy2(held_out / "evaluation.json", evaluation / "evaluation.json")
    shutil.copytree(final / "index", index)
    examples.mkdir()
    shutil.copy2(histories, examples / "user_histories.parquet")
    root = tmp_path / "published"

    decision = publish_artifacts(model, evaluation, index, examples, root, PublishConfig(0.1, 0.01))
    assert decision.published and decision.version == "f1" and decision.recall_at_200 == 0.40
    assert decision.gated_figures_of == "h1" and decision.trained_on_test_views
    assert "the figures are model h1's (held out" in decision.reason
    assert "every view up to 2026-03-01T00:00:00+00:00" in decision.reason and "not measured on them" in decision.reason
    written = json.loads((root / "versions" / "f1" / "evaluation.json").read_text())
    assert written["figures_of"]["model_version"] == "h1" and written["figures_of"]["held_out"] is True
    assert written["figures_of"]["published_model_fit"] == FINAL_FIT
    record = json.loads((root / "versions" / "f1" / "publish.json").read_text())
    assert record["gated_figures_of"] == "h1" and record["trained_on_test_views"] is True


def test_a_refit_model_says_it_was_not_gated_on_recall_from_unseen_views(tmp_path, histories):
    refit = {"splits": ["train", "validation", "test"], "epochs": 3, "chosen_on": "validation"}
    model = make_model_dir(tmp_path, "v1", 0.40, extra={"model_version": "v1", "fit": refit}, fit=refit)
    decision = publish_model(model, tmp_path / "published", PublishConfig(0.1, 0.01), histories)
    assert decision.trained_on_test_views and decision.gated_figures_of == "v1"
    assert "trained on its own test views" in decision.reason
    assert "not gated on recall from views it had not seen" in decision.reason
    held_out = make_model_dir(tmp_path, "v2", 0.40, extra={"model_version": "v2", "fit": HELD_OUT_FIT})
    plain = publish_model(held_out, tmp_path / "other", PublishConfig(0.1, 0.01), histories)
    assert not plain.trained_on_test_views and plain.gated_figures_of is None and "not held out" not in plain.reason


@pytest.mark.parametrize(
    "first_test_view, compared", [("2026-02-28T12:00:00+00:00", False), ("2026-03-02T00:00:00Z", True)]
)
def test_a_published_model_trained_on_the_candidates_test_views_is_not_compared_with_it_on_them(
    tmp_path, histories, first_test_view, compared
):
    # v1 was trained on every view up to 2026-03-01; v2's test views start before (v1 has seen some
    # of them: its recall there is inflated) or after (a fair pairwise comparison).
    root = tmp_path / "published"
    config = PublishConfig(min_recall_at_200=0.1, max_regression=0.01)
    publish_model(make_model_dir(tmp_path, "v1", 0.40, fit=FINAL_FIT), root, config, histories)
    extra = {
        **_paired("v1", 0.45 / 0.8, 0.8, [0.7, 0.9], {"popularity": 0.12}),
        "test_views": {"first": first_test_view, "last": "2026-03-03T00:00:00+00:00", "count": 10},
    }
    decision = publish_model(make_model_dir(tmp_path, "v2", 0.45, extra=extra), root, config, histories)
    if compared:
        assert not decision.published and "beyond the paired interval" in decision.reason, decision.reason
    else:
        assert decision.published, decision.reason
        assert "not compared with the published v1 on recall" in decision.reason
        assert "every view up to 2026-03-01T00:00:00+00:00" in decision.reason
