"""Loading a model + index pair: mismatches are refused, LATEST is followed."""

from __future__ import annotations

import json
import shutil

import pytest

from serving.versions import files as model_files
from serving.versions.pair import IndexMismatchError, load_model_pair
from tests.support import model_factory


def copy_model(source, target):
    shutil.copytree(source, target)
    return target


def test_pair_loads_with_titles_popular_and_histories(model_v1):
    pair = load_model_pair(model_v1)
    assert pair.version == "v1" and pair.index.ntotal == pair.n_articles == 400
    assert pair.titles[7] == "Listing 7"
    assert pair.popular and all(0 <= row < 400 for row, _ in pair.popular)
    counts = [count for _, count in pair.popular]
    assert counts == sorted(counts, reverse=True)
    assert pair.histories is not None and len(pair.histories) == 40
    assert pair.describe()["index_type"] == "flat"


def test_index_of_another_model_version_is_refused(model_v1, make_model, tmp_path):
    other = make_model("v2")
    mixed = copy_model(model_v1, tmp_path / "mixed")
    shutil.rmtree(mixed / "index")
    shutil.copytree(other / "index", mixed / "index")
    with pytest.raises(IndexMismatchError, match="built for model 'v2', not 'v1'"):
        load_model_pair(mixed)


def test_index_of_other_article_vectors_is_refused(model_v1, tmp_path):
    mixed = copy_model(model_v1, tmp_path / "mixed")
    manifest = json.loads((mixed / "index" / "index_manifest.json").read_text())
    manifest["article_vectors_sha256"] = "0" * 64
    (mixed / "index" / "index_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatchError, match="built from article vectors 000000000000"):
        load_model_pair(mixed)


def test_missing_index_manifest_and_size_mismatch_are_refused(model_v1, tmp_path):
    no_index = copy_model(model_v1, tmp_path / "no-index")
    (no_index / "index" / "index_manifest.json").unlink()
    with pytest.raises(model_files.ModelDirError, match="run `candidates build-index"):
        load_model_pair(no_index)

    fewer_ids = copy_model(model_v1, tmp_path / "fewer-ids")
    ids = (fewer_ids / "article_ids.txt").read_text().splitlines()
    (fewer_ids / "article_ids.txt").write_text("\n".join(ids[:-1]) + "\n")
    with pytest.raises(model_files.ModelDirError, match="truncated copy"):
        load_model_pair(fewer_ids)
    model_factory.write_manifest(fewer_ids, "v1")  # the manifest agrees now; the index still does not
    with pytest.raises(IndexMismatchError, match="holds 400 vectors but .* lists 399"):
        load_model_pair(fewer_ids)


def test_unfinished_model_is_refused(model_v1, tmp_path):
    unfinished = copy_model(model_v1, tmp_path / "unfinished")
    (unfinished / "manifest.json").unlink()
    with pytest.raises(model_files.ModelDirError, match="not a finished model directory"):
        load_model_pair(unfinished)


def test_publish_root_is_followed_through_latest(model_v1, tmp_path):
    root = tmp_path / "publish"
    (root / "versions").mkdir(parents=True)
    with pytest.raises(model_files.ModelDirError, match="nothing has been published yet"):
        model_files.resolve_model_dir(root)
    shutil.copytree(model_v1, root / "versions" / "v1")
    (root / "LATEST").write_text("v1\n")
    resolved = model_files.resolve_model_dir(root)
    assert resolved.model_dir == root / "versions" / "v1" and resolved.latest == "v1"
    assert model_files.resolve_model_dir(model_v1).publish_root is None
    (root / "LATEST").write_text("v9\n")
    with pytest.raises(model_files.ModelDirError, match="names version 'v9'"):
        model_files.resolve_model_dir(root)
    with pytest.raises(FileNotFoundError):
        model_files.resolve_model_dir(tmp_path / "nowhere")


def test_popular_list_drops_articles_outside_the_corpus(tmp_path):
    (tmp_path / "popular_articles.json").write_text(
        json.dumps([{"article_id": "gone", "count": 99}, ["b", 3], {"article_id": "a", "views": 5}])
    )
    assert model_files.read_popular(tmp_path, {"a", "b"}) == [("a", 5.0), ("b", 3.0)]
    (tmp_path / "popular_articles.json").write_text(json.dumps({"articles": [{"article_id": 7}]}))
    with pytest.raises(model_files.ModelDirError, match="entry 0"):
        model_files.read_popular(tmp_path, {"a"})


def test_an_id_listed_twice_is_refused(model_v1, tmp_path):
    broken = shutil.copytree(model_v1, tmp_path / "twice")
    ids = (broken / "article_ids.txt").read_text().splitlines()
    ids[10] = ids[3]
    (broken / "article_ids.txt").write_text("\n".join(ids) + "\n")
    model_factory.write_manifest(broken, "v1")
    with pytest.raises(
        model_files.ModelDirError, match=rf"lists an article id more than once: '{ids[3]}' on lines 4, 11"
    ):
        load_model_pair(broken)
