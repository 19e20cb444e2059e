"""The HTTP service end to end in-process (TestClient runs the real lifespan, model and index)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving.http.app import create_app
from serving.http.settings import ServiceSettings, get_settings
from serving.store import load_histories_to_redis
from tests.support import model_factory
from tests.support.ports import free_port


def client_for(**settings) -> TestClient:
    app = create_app()
    app.dependency_overrides[get_settings] = lambda: ServiceSettings(**settings)
    return TestClient(app)


@pytest.fixture(scope="module")
def client(model_v1):
    with client_for(model=model_v1) as c:
        yield c


@pytest.fixture(scope="module")
def histories(model_v1) -> dict[str, list[str]]:
    frame = pd.read_parquet(model_v1 / "user_histories.parquet")
    return {u: list(h) for u, h in zip(frame.user_id, frame.history)}


@pytest.fixture(scope="module")
def table(saved_models):
    return saved_models[0][1]


def candidates(client, user_id, **params):
    response = client.get(f"/v1/users/{user_id}/candidates", params=params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("user_id", ["u0000", "u0007", "u0021"])
def test_answers_match_brute_force_over_the_model(client, model_v1, histories, table, user_id):
    body = candidates(client, user_id, k=25)
    assert body["user_id"] == user_id and body["model_version"] == "v1" and body["fallback"] is False
    assert "fallback_reason" not in body
    expected = model_factory.expected_candidates(model_v1, table, histories[user_id], 25)
    assert [c["article_id"] for c in body["candidates"]] == [a for a, _ in expected]
    assert [c["score"] for c in body["candidates"]] == pytest.approx([s for _, s in expected], abs=1e-5)
    assert all(c["title"] == f"Listing {int(c['article_id'][1:])}" for c in body["candidates"])


def test_default_k_ordering_and_seen_exclusion(client, histories):
    body = candidates(client, "u0003")
    scores = [c["score"] for c in body["candidates"]]
    assert len(scores) == 200 and scores == sorted(scores, reverse=True)
    ids = [c["article_id"] for c in body["candidates"]]
    assert len(set(ids)) == 200 and not set(ids) & set(histories["u0003"])


def test_exclude_seen_false_keeps_viewed_articles(client, model_v1, histories, table):
    history = histories["u0005"]
    body = candidates(client, "u0005", k=400, exclude_seen="false")
    ids = [c["article_id"] for c in body["candidates"]]
    assert len(ids) == 400 and set(history) <= set(ids)
    expected = model_factory.expected_candidates(model_v1, table, history, 10, exclude_seen=False)
    assert ids[:10] == [a for a, _ in expected]
    # With exclusion, a k above what is left returns every unseen article and no more.
    body = candidates(client, "u0005", k=1000)
    assert len(body["candidates"]) == 400 - len(set(history))


def test_unknown_user_and_empty_history_get_the_popular_fallback(client, model_v1):
    popular = json.loads((model_v1 / "popular_articles.json").read_text())["articles"]
    for user_id, reason in (("stranger-42", "unknown_user"), ("u0039", "empty_history")):
        body = candidates(client, user_id, k=5)
        assert body["fallback"] is True and body["fallback_reason"] == reason
        assert [c["article_id"] for c in body["candidates"]] == [p["article_id"] for p in popular[:5]]
        scores = [c["score"] for c in body["candidates"]]
        assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    metrics = client.get("/metrics").text
    assert 'candidates_fallbacks_total{reason="unknown_user"}' in metrics
    assert 'candidates_fallbacks_total{reason="empty_history"}' in metrics


@pytest.mark.parametrize(
    "path, status, fragment",
    [
        ("/v1/users/u0001/candidates?k=0", 422, "greater than or equal to 1"),
        ("/v1/users/u0001/candidates?k=-5", 422, "greater than or equal to 1"),
        ("/v1/users/u0001/candidates?k=1001", 422, "k=1001 is above the maximum of 1000"),
        ("/v1/users/u0001/candidates?k=ten", 422, "valid integer"),
        ("/v1/users/u0001/candidates?exclude_seen=maybe", 422, "exclude_seen"),
        ("/v1/users/u%20x/candidates", 422, "path.user_id"),
        ("/v1/users/%3Cscript%3E/candidates", 422, "path.user_id"),
        ("/v1/users/" + "u" * 129 + "/candidates", 422, "path.user_id"),
        ("/v1/users/u0001/candidates?pad=" + "x" * 3000, 414, "the limit is 2048"),
        ("/v1/users/u0001", 404, "Not Found"),
    ],
)
def test_bad_requests_get_4xx_with_a_json_error(client, path, status, fragment):
    response = client.get(path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert fragment in response.json()["error"]["message"]


def test_oversized_body_and_wrong_method(client):
    response = client.post("/admin/reload", content=b"x" * (65 * 1024))
    assert response.status_code == 413 and "limit is 65536" in response.json()["error"]["message"]
    response = client.post("/v1/users/u0001/candidates")
    assert response.status_code == 405 and response.json()["error"]["status"] == 405


def test_health_readiness_metrics_and_docs(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["ready"] is True and ready["model_version"] == "v1" and ready["n_articles"] == 400
    candidates(client, "u0001", k=3)
    metrics = client.get("/metrics").text
    assert 'candidates_http_requests_total{endpoint="candidates",status="200"}' in metrics
    assert 'candidates_http_request_duration_seconds_bucket{endpoint="candidates",le="0.01"}' in metrics
    assert 'candidates_model_info{index_type="flat",model_version="v1"}' in metrics  # no paths in labels
    assert 'candidates_stage_duration_seconds_count{stage="encode"}' in metrics
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/v1/users/{user_id}/candidates" in spec["paths"]
    assert "CandidatesResponse" in spec["components"]["schemas"]


def test_server_timing_header_names_every_stage(client):
    response = client.get("/v1/users/u0001/candidates", params={"k": 3})
    stages = [part.split(";")[0] for part in response.headers["server-timing"].split(", ")]
    assert stages == ["store", "encode", "search", "filter", "serialize"]


@pytest.mark.redis
def test_redis_store_serves_the_same_answers(model_v1, redis_url, client):
    load_histories_to_redis(model_v1 / "user_histories.parquet", redis_url, prefix="app:")
    with client_for(model=model_v1, redis_url=redis_url, redis_prefix="app:") as redis_client:
        for user_id in ("u0002", "u0011", "u0039", "nobody"):
            assert candidates(redis_client, user_id, k=20) == candidates(client, user_id, k=20)


def test_unreachable_redis_degrades_to_the_fallback(model_v1):
    port = free_port()  # nothing listens there
    with client_for(model=model_v1, redis_url=f"redis://127.0.0.1:{port}/0") as down:
        body = candidates(down, "u0002", k=4)
        assert body["fallback"] is True and body["fallback_reason"] == "history_store_unavailable"
        assert len(body["candidates"]) == 4


def test_titles_can_be_left_out_and_models_without_histories_still_answer(make_model):
    model = make_model("no-hist", with_histories=False, with_titles=False)
    with client_for(model=model) as c:
        body = candidates(c, "u0001", k=3)
        assert body["fallback"] is True and body["fallback_reason"] == "unknown_user"
        assert all("title" not in item for item in body["candidates"])


def test_explicit_histories_file_overrides_the_model_copy(model_v1, tmp_path):
    frame = pd.DataFrame({"user_id": ["only-me"], "history": [["a000001", "a000002"]]})
    frame.to_parquet(tmp_path / "h.parquet")
    with client_for(model=model_v1, histories=tmp_path / "h.parquet", include_titles=False) as c:
        assert candidates(c, "only-me", k=3)["fallback"] is False
        assert "title" not in candidates(c, "only-me", k=3)["candidates"][0]
        assert candidates(c, "u0001", k=3)["fallback_reason"] == "unknown_user"


def test_startup_fails_loudly_for_a_model_that_cannot_serve(tmp_path):
    (tmp_path / "versions").mkdir()
    with pytest.raises(RuntimeError, match="nothing has been published yet"):
        with client_for(model=tmp_path):
            pass
