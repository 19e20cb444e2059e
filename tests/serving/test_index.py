"""FAISS index construction, search and recall, checked against numpy brute force on seeded data."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from homefeed.config import IndexConfig
from serving.index import faiss_index as fi


def clustered(n: int, d: int, seed: int, clusters: int = 40) -> np.ndarray:
    """Unit vectors around a few centres: shaped like trained embeddings, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    vectors = centres[rng.integers(0, clusters, n)] + 0.6 * rng.normal(size=(n, d))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def numpy_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ vectors.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@pytest.fixture(scope="module")
def data():
    vectors = clustered(3000, 24, seed=1)
    queries = clustered(60, 24, seed=2)
    return vectors, queries


def test_choose_index_type_by_corpus_size():
    config = IndexConfig(exact_below=1000)
    assert fi.choose_index_type(999, config) == "flat"
    assert fi.choose_index_type(1000, config) == "ivf"
    assert fi.choose_index_type(10, IndexConfig(index_type="ivf")) == "ivf"
    with pytest.raises(ValueError, match="unknown index type 'annoy'"):
        fi.choose_index_type(10, IndexConfig(index_type="annoy"))


def test_exact_index_returns_numpy_top_k_with_row_ids(data):
    vectors, queries = data
    index = fi.build_index(vectors, "flat", IndexConfig())
    scores, rows = fi.search(index, queries, 50)
    assert rows.shape == (60, 50) and rows.dtype == np.int64
    truth = numpy_top_k(vectors, queries, 50)
    # Same rows, except where two scores differ only by float rounding (then either order is right).
    assert (rows == truth).mean() > 0.99
    all_scores = queries @ vectors.T
    np.testing.assert_allclose(
        np.take_along_axis(all_scores, rows, axis=1), np.take_along_axis(all_scores, truth, axis=1), atol=1e-5
    )
    np.testing.assert_allclose(scores, np.take_along_axis(all_scores, rows, axis=1), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


@pytest.mark.parametrize("index_type, k", [("hnsw", 20), ("ivf", 200)])
def test_approximate_indexes_reach_the_floor_after_tuning(data, index_type, k):
    vectors, queries = data
    config = IndexConfig(hnsw_ef_search=4, ivf_nlist=64, ivf_nprobe=1, hnsw_m=4)
    index = fi.build_index(vectors, index_type, config)
    assert fi.index_type_of(index) == index_type
    exact = fi.exact_search(vectors, queries, k)
    tuned = fi.tune_search(index, queries, exact, k, 0.95, config)
    assert tuned.recall >= 0.95
    # The first trial is the configured (too small) setting; tuning had to raise it.
    assert len(tuned.trials) >= 2 and tuned.trials[0]["recall"] < tuned.trials[-1]["recall"]
    assert fi.search_params_of(index) == tuned.params
    name = "ef_search" if index_type == "hnsw" else "nprobe"
    chosen = getattr(tuned.params, name)
    assert all(t["recall"] < 0.95 for t in tuned.trials if t[name] < chosen)  # the cheapest that passed
    # Recall as measured equals an independent numpy count of exact neighbours found.
    _, rows = fi.search(index, queries, k)
    truth = numpy_top_k(vectors, queries, k)
    independent = np.mean([len(set(r) & set(t)) / k for r, t in zip(rows, truth)])
    assert tuned.recall == pytest.approx(independent, abs=0.005)  # float near-ties may differ


def test_search_params_survive_write_and_read(tmp_path, data):
    vectors, _ = data
    index = fi.build_index(vectors, "hnsw", IndexConfig(hnsw_ef_search=77, hnsw_m=8))
    faiss.write_index(index, str(tmp_path / "a.faiss"))
    again = faiss.read_index(str(tmp_path / "a.faiss"))
    assert fi.index_type_of(again) == "hnsw" and fi.search_params_of(again).ef_search == 77
    fi.set_search_params(again, fi.SearchParams(ef_search=300))
    assert fi.search_params_of(again).ef_search == 300


def test_padding_rows_are_dropped_and_never_count_as_hits():
    # IVF with one probed list of a 2-list index cannot reach every vector: FAISS pads with -1.
    vectors = np.concatenate([clustered(60, 8, seed=3) + 5, clustered(60, 8, seed=4) - 5]).astype(np.float32)
    index = fi.build_index(vectors, "ivf", IndexConfig(ivf_nlist=2, ivf_nprobe=1))
    scores, rows = fi.search(index, vectors[:1], 100)
    assert (rows == -1).any()
    kept_scores, kept_rows = fi.valid_hits(scores[0], rows[0])
    assert (kept_rows >= 0).all() and len(kept_rows) == len(kept_scores) < 100

    exact = np.array([[0, 1, 2, 3]])
    assert fi.recall_at_k(np.array([[0, -1, -1, -1]]), exact, 4) == 0.25
    assert fi.recall_at_k(np.array([[-1, -1, -1, -1]]), np.array([[-1, -1, -1, -1]]), 4) == 1.0


def test_recall_counts_ties_with_the_kth_exact_score_as_hits():
    # Rows 2 and 3 have the same score (duplicate vectors): either is a correct 2nd neighbour.
    exact_rows, exact_scores = np.array([[0, 2]]), np.array([[0.9, 0.5]])
    approx_rows, approx_scores = np.array([[0, 3]]), np.array([[0.9, 0.5]])
    assert fi.recall_at_k(approx_rows, exact_rows, 2) == 0.5
    assert fi.recall_at_k(approx_rows, exact_rows, 2, approx_scores, exact_scores) == 1.0
    worse = np.array([[0.9, 0.4]])
    assert fi.recall_at_k(approx_rows, exact_rows, 2, worse, exact_scores) == 0.5


def test_k_larger_than_corpus_is_capped(data):
    vectors, queries = data
    index = fi.build_index(vectors[:10], "flat", IndexConfig())
    scores, rows = fi.search(index, queries[:2], 200)
    assert rows.shape == (2, 10)
    assert fi.recall_at_k(rows, numpy_top_k(vectors[:10], queries[:2], 10), 200) == 1.0


def test_bad_vectors_are_refused_with_their_shape():
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        fi.build_index(np.zeros(5, np.float32), "flat", IndexConfig())
    bad = np.ones((4, 3), np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="1 article vector"):
        fi.build_index(bad, "flat", IndexConfig())


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
def test_memory_mapped_index_answers_like_the_one_in_memory(tmp_path, data, index_type):
    vectors, queries = data
    index = fi.build_index(vectors, index_type, IndexConfig(ivf_nlist=16, ivf_nprobe=4, hnsw_m=8))
    path = tmp_path / "articles.faiss"
    faiss.write_index(index, str(path))
    mapped = fi.read_index(path)
    fi.set_search_params(mapped, fi.search_params_of(index))
    assert fi.index_type_of(mapped) == index_type and mapped.ntotal == len(vectors)
    expected_scores, expected_rows = fi.search(index, queries, 50)
    scores, rows = fi.search(mapped, queries, 50)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)
