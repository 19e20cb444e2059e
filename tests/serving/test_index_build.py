"""`build_model_index`: a model directory's index, recall-checked on real user vectors, written atomically."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from components.build_index.build import RecallBelowFloorError, build_model_index
from homefeed.config import IndexConfig
from serving.versions import files as model_files
from serving.versions.files import read_index_manifest
from tests.support import model_factory

LOW_RECALL_IVF = IndexConfig(index_type="ivf", ivf_nlist=8, ivf_nprobe=1, tune_search=False, recall_floor=0.99)


def test_small_corpus_gets_an_exact_index_with_the_models_version_and_hash(make_model):
    model = make_model("build-flat")
    manifest = read_index_manifest(model / "index")
    assert manifest["index_type"] == "flat" and manifest["recall@200"] == 1.0
    assert manifest["model_version"] == "build-flat"
    assert manifest["article_vectors_sha256"] == model_factory.sha256_of(model / "article_vectors.npy")
    assert manifest["n_articles"] == 400 and manifest["build_seconds"] >= 0
    assert (model / "index" / "articles.faiss").stat().st_size == manifest["index_bytes"]
    assert not [p.name for p in model.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_approximate_index_recall_is_measured_on_encoded_user_histories(make_model, caplog):
    model = make_model("build-hnsw", index=False)
    with caplog.at_level(logging.INFO, logger="components"):
        manifest = build_model_index(model, IndexConfig(index_type="hnsw", recall_sample_size=25))
    assert manifest["index_type"] == "hnsw"
    assert manifest["recall_query_source"] == "user_histories"
    assert manifest["recall_queries"] == 25  # sampled from the 39 users with a history
    assert manifest["recall@200"] >= 0.95
    assert manifest["search_params"]["ef_search"] >= 200
    assert "encoding 25 user histories" in caplog.text


def test_histories_can_come_from_the_extract_and_article_vectors_are_the_last_resort(make_model, tmp_path, caplog):
    model = make_model("build-nohist", index=False, with_histories=False)
    extract = model_factory.write_histories(
        model_factory.histories_frame(model_factory.article_ids(400), 12, seed=5), tmp_path / "user_histories.parquet"
    )
    manifest = build_model_index(model, IndexConfig(index_type="ivf", ivf_nlist=4), histories=extract)
    assert manifest["recall_query_source"] == "user_histories" and manifest["recall_queries"] == 11

    with caplog.at_level(logging.WARNING, logger="components"):
        manifest = build_model_index(model, IndexConfig(index_type="ivf", ivf_nlist=4, recall_sample_size=50))
    assert manifest["recall_query_source"] == "article_vectors" and manifest["recall_queries"] == 50
    assert "article vectors as queries" in caplog.text

    with pytest.raises(FileNotFoundError, match="--histories"):
        build_model_index(model, IndexConfig(index_type="ivf"), histories=tmp_path / "nope.parquet")


def test_index_under_the_recall_floor_is_refused_and_nothing_is_written(make_model):
    model = make_model("build-refused")  # has a good exact index already
    before = (model / "index" / "index_manifest.json").read_text()
    with pytest.raises(
        RecallBelowFloorError, match=r"ivf index recall@200 vs exact is 0\.\d+, below the floor 0\.9900"
    ):
        build_model_index(model, LOW_RECALL_IVF)
    assert (model / "index" / "index_manifest.json").read_text() == before
    assert sorted(p.name for p in (model / "index").iterdir()) == ["articles.faiss", "index_manifest.json"]
    assert not [p.name for p in model.iterdir() if p.name.startswith(".")]


def test_rebuild_replaces_the_index_and_output_dir_is_honoured(make_model, tmp_path):
    model = make_model("build-rebuild")
    build_model_index(model, IndexConfig(index_type="hnsw"))
    assert read_index_manifest(model / "index")["index_type"] == "hnsw"
    elsewhere = build_model_index(model, IndexConfig(index_type="flat"), output_dir=tmp_path / "artifact" / "index")
    assert elsewhere["index_type"] == "flat" and (tmp_path / "artifact" / "index" / "articles.faiss").exists()
    assert read_index_manifest(model / "index")["index_type"] == "hnsw"


def test_unfinished_or_tampered_model_directories_are_refused(make_model, tmp_path):
    model = make_model("build-broken", index=False)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(model, unfinished)
    (unfinished / "manifest.json").unlink()
    with pytest.raises(model_files.ModelDirError, match="manifest.json is missing"):
        build_model_index(unfinished)

    tampered = tmp_path / "tampered"
    shutil.copytree(model, tampered)
    np.save(tampered / "article_vectors.npy", np.zeros((400, 16), np.float32))
    with pytest.raises(model_files.ModelDirError, match="changed after training"):
        build_model_index(tampered)
    assert not (tampered / "index").exists()

    short_ids = tmp_path / "short-ids"
    shutil.copytree(model, short_ids)
    (short_ids / "article_ids.txt").write_text("a1\na2\n")
    with pytest.raises(model_files.ModelDirError, match="truncated copy"):  # the trainer's file check
        build_model_index(short_ids)
    model_factory.write_manifest(short_ids, "short-ids")  # consistent on paper, still wrong
    with pytest.raises(model_files.ModelDirError, match="400 article vectors but 2 lines"):
        build_model_index(short_ids)

    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model_index(tmp_path / "missing")


def test_manifest_records_the_config_and_tuning(make_model):
    model = make_model("build-record", index=False)
    build_model_index(model, IndexConfig(index_type="ivf", ivf_nlist=8, ivf_nprobe=1, recall_floor=0.9))
    manifest = json.loads((model / "index" / "index_manifest.json").read_text())
    assert manifest["config"]["ivf_nlist"] == 8
    trials = manifest["tuning"]
    assert trials[0]["nprobe"] == 1  # starts from the configured value
    chosen = min(t["nprobe"] for t in trials if t["recall"] >= 0.9)
    assert manifest["search_params"] == {"nprobe": chosen} and manifest["recall@200"] >= 0.9
    assert all(t["recall"] < 0.9 for t in trials if t["nprobe"] < chosen)  # nothing cheaper passed
