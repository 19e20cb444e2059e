"""A half-written or tampered model directory is never taken for a finished one (no TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from homefeed.layout import model_dir as layout


def _fake_model_dir(path: Path, version: str = "v1", created_at: str = "2024-01-01T00:00:00+00:00") -> Path:
    """The files and manifest of a model directory (contents are placeholders)."""
    (path / layout.SAVED_MODEL_DIR).mkdir(parents=True)
    (path / layout.SAVED_MODEL_DIR / "saved_model.pb").write_bytes(b"graph")
    (path / layout.ARTICLE_VECTORS_FILE).write_bytes(b"\x00" * 64)
    (path / layout.ARTICLE_IDS_FILE).write_text("a\nb\n")
    files = {
        p.relative_to(path).as_posix(): {"bytes": p.stat().st_size, "sha256": layout.sha256_file(p)}
        for p in path.rglob("*")
        if p.is_file()
    }
    manifest = {
        "format_version": layout.FORMAT_VERSION,
        "model_version": version,
        "created_at": created_at,
        "files": files,
    }
    (path / layout.MANIFEST_FILE).write_text(json.dumps(manifest))
    return path


def test_finished_directory_is_recognised(tmp_path):
    model = _fake_model_dir(tmp_path / "v1")
    assert layout.is_finished_model_dir(model)
    assert layout.load_manifest(model, verify_hashes=True)["model_version"] == "v1"


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / layout.MANIFEST_FILE).unlink(), "manifest.json is missing"),
        (lambda d: (d / layout.MANIFEST_FILE).write_text("{not json"), "not valid JSON"),
        (lambda d: (d / layout.ARTICLE_IDS_FILE).unlink(), "article_ids.txt is listed in the manifest but missing"),
        (lambda d: (d / layout.ARTICLE_VECTORS_FILE).write_bytes(b"\x00" * 10), "truncated"),
        (lambda d: (d / layout.SAVED_MODEL_DIR / "saved_model.pb").unlink(), "saved_model.pb"),
    ],
)
def test_incomplete_directories_are_refused_with_the_reason(tmp_path, damage, message):
    model = _fake_model_dir(tmp_path / "v1")
    damage(model)
    assert not layout.is_finished_model_dir(model)
    with pytest.raises(layout.UnfinishedModelError, match=message):
        layout.load_manifest(model)


def test_changed_content_is_caught_by_hash_verification(tmp_path):
    model = _fake_model_dir(tmp_path / "v1")
    (model / layout.ARTICLE_VECTORS_FILE).write_bytes(b"\x01" * 64)  # same size, other bytes
    assert layout.is_finished_model_dir(model)  # the cheap check only looks at sizes
    assert not layout.is_finished_model_dir(model, verify_hashes=True)


def test_staging_directory_is_never_finished_even_with_a_manifest(tmp_path):
    staging = _fake_model_dir(tmp_path / ".v1.staging-1234")
    assert not layout.is_finished_model_dir(staging)
    with pytest.raises(layout.UnfinishedModelError, match="staging"):
        layout.load_manifest(staging)


def test_resolve_picks_the_newest_finished_model_under_a_root(tmp_path):
    _fake_model_dir(tmp_path / "old", "old", "2024-01-01T00:00:00+00:00")
    _fake_model_dir(tmp_path / "new", "new", "2024-02-01T00:00:00+00:00")
    _fake_model_dir(tmp_path / ".newer.staging-1", "newer", "2024-03-01T00:00:00+00:00")
    (tmp_path / "broken").mkdir()
    assert layout.resolve_model_dir(tmp_path) == tmp_path / "new"
    assert layout.resolve_model_dir(tmp_path / "old") == tmp_path / "old"
    with pytest.raises(layout.UnfinishedModelError, match="holds none"):
        layout.resolve_model_dir(tmp_path / "broken")
    with pytest.raises(FileNotFoundError):
        layout.resolve_model_dir(tmp_path / "absent")


def test_write_json_atomic_leaves_no_temporary_file(tmp_path):
    layout.write_json_atomic(tmp_path / "x.json", {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
