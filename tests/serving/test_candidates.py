"""`recommend` without HTTP: padding, short corpora and failing models never leak into answers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from homefeed.config import IndexConfig
from serving.index import faiss_index as fi
from serving.recommend.candidates import MODEL_ERROR, answer_json, recommend
from serving.versions.pair import load_model_pair


@pytest.fixture(scope="module")
def pair(model_v1):
    return load_model_pair(model_v1)


def test_faiss_padding_is_filtered(pair, model_v1):
    # An IVF index probing 1 of 64 lists reaches only a few articles: FAISS pads the rest with -1.
    vectors = np.load(model_v1 / "article_vectors.npy")
    sparse = fi.build_index(vectors, "ivf", IndexConfig(ivf_nlist=64, ivf_nprobe=1))
    answer = recommend(dataclasses.replace(pair, index=sparse), None, "u0001", k=200)
    assert not answer.fallback and 0 < len(answer.rows) < 200
    assert all(0 <= row < pair.n_articles for row in answer.rows)
    assert answer.scores == sorted(answer.scores, reverse=True)


def test_k_above_the_corpus_returns_every_unseen_article(pair):
    history = pair.histories.get("u0002")["history"]
    answer = recommend(pair, None, "u0002", k=5000)
    assert len(answer.rows) == pair.n_articles - len(set(history))
    assert not {pair.article_ids[r] for r in answer.rows} & set(history)


class BrokenEncoder:
    def encode(self, rows):
        raise RuntimeError("kernel exploded")


def test_a_failing_model_call_gives_the_fallback_not_an_exception(pair, caplog):
    answer = recommend(dataclasses.replace(pair, encoder=BrokenEncoder()), None, "u0002", k=5)
    assert answer.fallback and answer.fallback_reason == MODEL_ERROR and len(answer.rows) == 5
    seen = set(pair.histories.get("u0002")["history"])
    assert not {pair.article_ids[r] for r in answer.rows} & seen  # the fallback still drops seen ones
    assert "kernel exploded" in caplog.text
    body = answer_json(answer, pair)
    assert b'"fallback_reason":"model_error"' in body


def test_an_unreachable_history_store_is_not_logged_on_every_request(pair, caplog):
    # Every request falls back while Redis is down; at hundreds of requests a second one warning
    # per request would flood the log. The fallback counter in /metrics counts each of them.
    from serving.recommend.candidates import STORE_UNAVAILABLE
    from serving.store import RedisStore
    from tests.support.ports import free_port

    port = free_port()  # nothing listens there
    store = RedisStore(f"redis://127.0.0.1:{port}/0", "x:", 0.2)
    with caplog.at_level("WARNING", logger="serving.recommend.candidates"):
        answers = [recommend(pair, store, "u0001", k=5) for _ in range(20)]
    assert all(a.fallback_reason == STORE_UNAVAILABLE for a in answers)
    warnings = [r for r in caplog.records if "history store unavailable" in r.getMessage()]
    assert len(warnings) <= 1, len(warnings)


# --- the vectorised hot path (issue 16) against the per-candidate Python it replaced ----------


def _reference_body(pair, user_id, k, exclude_seen, include_titles, regions=None):
    """The response as the service built it before: a loop over FAISS's neighbours with the
    seen test on id strings, then one dict per candidate with `round(score, 6)`."""
    import orjson

    from serving.live.corpus_search import search_live
    from serving.live.overlay import OverlayBuilder
    from serving.store import seen_set

    history = pair.histories.get(user_id)
    seen = seen_set(history) if exclude_seen else set()
    vector = pair.encoder.encode([history])
    if regions is not None:
        rows, scores = search_live(OverlayBuilder(pair).snapshot(), vector[0], k, seen, regions)
    else:
        found_scores, found_rows = fi.search(pair.index, vector, k + len(seen))
        rows, scores = [], []
        for score, row in zip(found_scores[0].tolist(), found_rows[0].tolist()):
            if row < 0 or (seen and pair.article_ids[row] in seen):
                continue
            rows.append(row)
            scores.append(score)
            if len(rows) == k:
                break
    titles = pair.titles if include_titles else None
    candidates = []
    for r, s in zip(rows, scores):
        item = {"article_id": pair.article_ids[r], "score": round(s, 6)}
        if titles is not None and titles[r] is not None:
            item["title"] = titles[r]
        candidates.append(item)
    body = {"user_id": user_id, "model_version": pair.version, "fallback": False, "candidates": candidates}
    return orjson.dumps(body)


@pytest.mark.parametrize("exclude_seen", [True, False])
@pytest.mark.parametrize("regions", [None, {"south"}])
def test_the_body_is_byte_for_byte_the_per_dict_reference(pair, exclude_seen, regions):
    users = ["u0001", "u0002", "u0007", "u0013", "u0031"]
    for user_id in users:
        for include_titles in (True, False):
            answer = recommend(pair, None, user_id, k=50, exclude_seen=exclude_seen, regions=regions)
            assert not answer.fallback
            expected = _reference_body(pair, user_id, 50, exclude_seen, include_titles, regions)
            assert answer_json(answer, pair, include_titles) == expected, (user_id, include_titles)
    # and seen articles really were in reach: without the filter some come back
    if regions is None and not exclude_seen:
        hit = [
            u
            for u in users
            if {pair.article_ids[r] for r in recommend(pair, None, u, k=50, exclude_seen=False).rows}
            & set(pair.histories.get(u)["history"])
        ]
        assert hit


def test_round6_is_round_for_float32_and_other_floats():
    from serving.recommend.hot_path import round6

    rng = np.random.default_rng(3)
    f32 = (rng.standard_normal(200_000) * 10.0 ** rng.integers(-9, 4, 200_000)).astype(np.float32)
    edges = np.array(
        [0.0078125, -0.0078125, 0.5e-6, 1.5e-6, -0.0, 1e-7, -4e-7, 3.4e38, -3.4e38, 1e-45, np.inf, -np.inf, 2.5, 0.1],
        dtype=np.float32,
    )
    # doubles that are not float32s: numpy rounds 2.5e-06 etc. to even on an inexact product
    for values in (np.concatenate([f32, edges]).tolist(), [0.1, 1 / 3, 2 / 3, 1e300, 2.5e-06, 3.5e-06, 4.5e-06]):
        import orjson

        expected = [round(v, 6) for v in values]
        got = round6(values)
        assert orjson.dumps(got) == orjson.dumps(expected)
    assert np.isnan(round6([float("nan")])[0]) and round6([]) == []


def test_drop_seen_compares_ids_not_hashes(pair):
    # A seen "id" whose hash equals an article's but which is not that article must drop nothing.
    from serving.recommend.hot_path import drop_seen

    target = pair.article_ids[5]

    class SameHash:
        def __hash__(self):
            return hash(target)

        def __eq__(self, other):
            return False

    rows = np.array([7, -1, 5, 9, 5 + 1], dtype=np.int64)
    scores = np.array([0.9, 0.0, 0.8, 0.7, 0.6], dtype=np.float32)
    assert drop_seen(pair, rows, scores, {SameHash()}, 10)[0] == [7, 5, 9, 6]
    assert drop_seen(pair, rows, scores, [target, pair.article_ids[9]], 10)[0] == [7, 6]  # any iterable
    assert drop_seen(pair, rows, scores, (), 2) == ([7, 5], scores[[0, 2]].tolist())


def test_every_article_in_the_seen_set_is_excluded_not_only_the_history(pair):
    """The store's `seen` (the last 1,000 articles viewed) is the filter: the user's top candidates
    when only the history is known disappear once the seen set names them."""
    from homefeed import features
    from serving.store import EmbeddedStore

    row = dict(pair.histories.get("u0002"))
    row.pop(features.SEEN, None)
    first = recommend(pair, EmbeddedStore({"u": row}), "u", k=10)
    top = [pair.article_ids[r] for r in first.rows[:3]]
    with_seen = {**row, features.SEEN: [*row[features.HISTORY], *top]}
    second = recommend(pair, EmbeddedStore({"u": with_seen}), "u", k=10)
    answered = [pair.article_ids[r] for r in second.rows]
    assert not set(answered) & (set(top) | set(row[features.HISTORY])) and len(answered) == 10
    # The user vector is the same (the seen set is not a model input): the rest keeps its order.
    assert answered[:7] == [pair.article_ids[r] for r in first.rows[3:10]]


def test_the_body_with_live_listings_names_each_row_as_the_overlay_does(pair):
    # With live records the body is built from the overlay (model rows and live slots); each
    # candidate must carry exactly `overlay.article_id(row)` and `overlay.title(row)`.
    import orjson

    from serving.live.articles import parse_article
    from serving.live.overlay import build_overlay
    from serving.recommend.candidates import CandidateAnswer

    records = {
        "live-1": parse_article("live-1", {"title": "a new lamp", "category": "books", "region": "south"}),
        "live-2": parse_article("live-2", {"category": "toys", "region": "north"}),  # no title
        pair.article_ids[3]: parse_article(pair.article_ids[3], {"status": "sold"}),
    }
    overlay = build_overlay(pair, records)
    rows = [0, 1, pair.n_articles, 2, pair.n_articles + 1, 5]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    answer = CandidateAnswer("u0001", pair.version, False, rows, scores, None, {}, overlay)
    for include_titles in (True, False):
        expected = []
        for r, s in zip(rows, scores):
            item = {"article_id": overlay.article_id(r), "score": s}
            title = overlay.title(r) if include_titles else None
            if title is not None:
                item["title"] = title
            expected.append(item)
        body = orjson.loads(answer_json(answer, pair, include_titles))
        assert body["candidates"] == expected
        assert {c["article_id"] for c in body["candidates"]} >= {"live-1", "live-2"}
