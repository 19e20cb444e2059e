"""New versions: atomic swap of model + index, bad versions rejected, in-flight requests unharmed."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving.http.app import create_app
from serving.http.settings import ServiceSettings, get_settings
from tests.support import model_factory


@pytest.fixture(scope="module")
def versions(make_model):
    """Three model dirs: v1 and v2 (different embeddings, so different answers) and a broken v3."""
    v1, v2 = make_model("v1", seed=0), make_model("v2", seed=1)
    v3 = make_model("v3", seed=1, index=False)
    shutil.copytree(v1 / "index", v3 / "index")  # an index built for another model
    return {"v1": v1, "v2": v2, "v3": v3}


def publish(root, versions, version):
    """What the publish step does, by hand: copy the version in, then move LATEST."""
    target = root / "versions" / version
    if not target.exists():
        shutil.copytree(versions[version], target)
    tmp = root / ".LATEST.tmp"
    tmp.write_text(version + "\n")
    tmp.replace(root / "LATEST")


@pytest.fixture
def root(tmp_path, versions):
    root = tmp_path / "publish"
    (root / "versions").mkdir(parents=True)
    publish(root, versions, "v1")
    return root


def client_for(**settings) -> TestClient:
    settings.setdefault("reload_min_interval_s", 0)  # these tests reload back to back on purpose
    app = create_app()
    app.dependency_overrides[get_settings] = lambda: ServiceSettings(**settings)
    return TestClient(app)


def expected_ids(versions, saved_models, version, user_id, k):
    model = versions[version]
    frame = pd.read_parquet(model / "user_histories.parquet")
    history = list(frame.set_index("user_id").loc[user_id, "history"])
    table = saved_models[0 if version == "v1" else 1][1]
    return [a for a, _ in model_factory.expected_candidates(model, table, history, k)]


def get(client, user_id="u0004", k=10):
    response = client.get(f"/v1/users/{user_id}/candidates", params={"k": k})
    assert response.status_code == 200, response.text
    return response.json()


def test_admin_reload_swaps_to_the_new_version_and_rejects_a_broken_one(root, versions, saved_models):
    with client_for(model=root, watch_latest=False) as client:
        assert get(client)["model_version"] == "v1"
        assert client.post("/admin/reload").json()["result"] == "unchanged"

        publish(root, versions, "v2")
        answer = client.post("/admin/reload").json()
        assert answer == {
            "result": "loaded",
            "model_version": "v2",
            "previous_version": "v1",
            "message": "now serving model v2",
        }
        body = get(client)
        assert body["model_version"] == "v2"
        assert [c["article_id"] for c in body["candidates"]] == expected_ids(versions, saved_models, "v2", "u0004", 10)

        publish(root, versions, "v3")  # its index was built for v1
        response = client.post("/admin/reload")
        assert response.status_code == 409
        message = response.json()["error"]["message"]
        assert "built for model 'v1', not 'v3'" in message and "still serving v2" in message
        body = get(client)
        assert body["model_version"] == "v2"
        assert [c["article_id"] for c in body["candidates"]] == expected_ids(versions, saved_models, "v2", "u0004", 10)
        ready = client.get("/readyz").json()
        assert ready["model_version"] == "v2" and "not 'v3'" in ready["last_reload_error"]
        metrics = client.get("/metrics").text
        assert 'candidates_model_reloads_total{result="rejected"} 1.0' in metrics
        assert 'candidates_model_reloads_total{result="loaded"} 2.0' in metrics  # startup + v2
        assert 'model_version="v2"' in metrics


def test_unfinished_version_is_rejected(root, versions, tmp_path):
    half = tmp_path / "half"
    shutil.copytree(versions["v2"], half)
    (half / "manifest.json").unlink()
    shutil.copytree(half, root / "versions" / "v4")
    (root / "LATEST").write_text("v4\n")
    with pytest.raises(RuntimeError, match="manifest.json is missing"):  # nothing good to start with
        with client_for(model=root, watch_latest=False):
            pass
    (root / "LATEST").write_text("v1\n")
    with client_for(model=root, watch_latest=False) as client:
        (root / "LATEST").write_text("v4\n")
        response = client.post("/admin/reload")
        assert response.status_code == 409 and "manifest.json is missing" in response.json()["error"]["message"]
        assert get(client)["model_version"] == "v1"


def test_admin_reload_can_require_a_token(root):
    with client_for(model=root, watch_latest=False, admin_token="s3cret") as client:
        assert client.post("/admin/reload").status_code == 401
        ok = client.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["result"] == "unchanged"


def test_watcher_follows_latest_and_does_not_retry_a_rejected_version(root, versions):
    with client_for(model=root, watch_interval_s=0.05) as client:
        publish(root, versions, "v2")
        deadline = time.monotonic() + 20
        while get(client)["model_version"] != "v2":
            assert time.monotonic() < deadline, "watcher did not pick up v2"
            time.sleep(0.05)
        publish(root, versions, "v3")
        deadline = time.monotonic() + 20
        while 'result="rejected"' not in client.get("/metrics").text:
            assert time.monotonic() < deadline, "watcher did not try v3"
            time.sleep(0.05)
        time.sleep(0.5)  # ten more polls: a rejected LATEST is not loaded again and again
        assert 'candidates_model_reloads_total{result="rejected"} 1.0' in client.get("/metrics").text
        assert get(client)["model_version"] == "v2"


class BlockingStore:
    """Wraps a store; `get` waits until released, holding a request in flight."""

    def __init__(self, inner):
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()
        self.description = "blocking"

    def get(self, user_id):
        self.entered.set()
        assert self.release.wait(20)
        return self.inner.get(user_id)

    def close(self):
        pass


def test_in_flight_request_finishes_on_the_pair_it_started_with(root, versions, saved_models):
    with client_for(model=root, watch_latest=False) as client:
        app = client.app
        store = BlockingStore(app.state.holder.pair.histories)
        app.state.store = store
        result = {}
        worker = threading.Thread(target=lambda: result.setdefault("body", get(client, "u0007", 10)))
        worker.start()
        assert store.entered.wait(20)
        publish(root, versions, "v2")
        app.state.holder.reload("test")  # swap while the request is between store and model
        assert app.state.holder.pair.version == "v2"
        store.release.set()
        worker.join(20)
        body = result["body"]
        assert body["model_version"] == "v1"
        assert [c["article_id"] for c in body["candidates"]] == expected_ids(versions, saved_models, "v1", "u0007", 10)
        app.state.store = None
        assert get(client, "u0007")["model_version"] == "v2"


def test_concurrent_requests_during_reloads_are_always_self_consistent(root, versions, saved_models):
    expected = {v: expected_ids(versions, saved_models, v, "u0010", 15) for v in ("v1", "v2")}
    assert expected["v1"] != expected["v2"]
    errors, seen_versions = [], set()
    stop = threading.Event()

    def hammer(client):
        while not stop.is_set():
            response = client.get("/v1/users/u0010/candidates", params={"k": 15})
            if response.status_code != 200:
                errors.append(response.text)
                continue
            body = response.json()
            seen_versions.add(body["model_version"])
            if [c["article_id"] for c in body["candidates"]] != expected[body["model_version"]]:
                errors.append(f"answer of {body['model_version']} does not match that model")

    with client_for(model=root, watch_latest=False) as client:
        threads = [threading.Thread(target=hammer, args=(client,)) for _ in range(3)]
        for t in threads:
            t.start()
        for version in ("v2", "v1", "v2", "v1"):
            publish(root, versions, version)
            assert client.post("/admin/reload").json()["model_version"] == version
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join(20)
    assert not errors, errors[:3]
    assert seen_versions == {"v1", "v2"}


def test_reload_of_a_plain_model_dir_is_unchanged_unless_forced(versions):
    with client_for(model=versions["v1"]) as client:
        assert client.post("/admin/reload").json()["result"] == "unchanged"
        forced = client.post("/admin/reload", params={"force": "true"}).json()
        assert forced["result"] == "loaded" and forced["model_version"] == "v1"
        json.loads(client.get("/readyz").text)


def test_reloads_are_rate_limited_and_the_served_version_stays(root, versions):
    with client_for(model=root, watch_latest=False, reload_min_interval_s=60) as client:
        publish(root, versions, "v2")
        assert client.post("/admin/reload").json()["model_version"] == "v2"  # start-up does not count
        response = client.post("/admin/reload", params={"force": "true"})
        assert response.status_code == 429 and 1 <= int(response.headers["Retry-After"]) <= 60
        assert "at most one load per 60s" in response.json()["error"]["message"]
        assert get(client)["model_version"] == "v2"
        # A cheap "unchanged" answer is never limited, and readiness shows the last real attempt.
        assert client.post("/admin/reload").json()["result"] == "unchanged"
        ready = client.get("/readyz").json()
        assert ready["last_reload"]["result"] == "unchanged" and ready["last_reload_error"] is None
        metrics = client.get("/metrics").text
        assert 'candidates_model_reloads_total{result="rate_limited"} 1.0' in metrics
