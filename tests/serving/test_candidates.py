"""`recommend` without HTTP: padding, short corpora and failing models never leak into answers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from homefeed.config import IndexConfig
from serving import index as fi
from serving.candidates import MODEL_ERROR, answer_json, recommend
from serving.model_pair import load_model_pair


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
    import socket

    from serving.candidates import STORE_UNAVAILABLE
    from serving.store import RedisStore

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = RedisStore(f"redis://127.0.0.1:{port}/0", "x:", 0.2)
    with caplog.at_level("WARNING", logger="serving.candidates"):
        answers = [recommend(pair, store, "u0001", k=5) for _ in range(20)]
    assert all(a.fallback_reason == STORE_UNAVAILABLE for a in answers)
    warnings = [r for r in caplog.records if "history store unavailable" in r.getMessage()]
    assert len(warnings) <= 1, len(warnings)


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
