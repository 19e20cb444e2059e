"""The pipeline in its image and the service in its image, against the host's own code.

1. The whole pipeline runs through kfp.local with every task in a container of the pipeline
   image (`run_local(..., image=...)`, kfp.local's DockerRunner) on small sample data, and
   publishes a version.
2. The host's `candidates serve` loads that version, and the serving image serves the same
   publish root (mounted read-only at /models, port published on 127.0.0.1 only): /readyz and
   the candidates of several users (known, unknown) are the same from both.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from serving.query import wait_until_ready
from tests.support.service import Service

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(3600)]

K = 50


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_pipeline_runs_in_the_image_and_publishes(image_run, pipeline_image):
    assert image_run.published, image_run.reason
    version_dir = image_run.workdir / "versions" / image_run.version
    assert (image_run.workdir / "LATEST").read_text().strip() == image_run.version
    assert (version_dir / "manifest.json").is_file() and (version_dir / "index" / "articles.faiss").is_file()
    log = image_run.log_file.read_text()
    # Every task ran in a container of the image, not in this Python.
    assert log.count(f"Found image '{pipeline_image}'") == 8, log[-3000:]  # one per task
    assert set(image_run.stage_seconds) == {
        "extract",
        "transform",
        "train",
        "evaluate",
        "transform-2",
        "train-final",
        "build-index",
        "publish",
    }


@pytest.fixture(scope="module")
def host_service(image_run, tmp_path_factory):
    """The host's `candidates serve` on the publish root the image's pipeline wrote."""
    service = Service(image_run.workdir, tmp_path_factory.mktemp("host-service") / "serve.log")
    try:
        service.wait_ready(timeout_s=300)
        yield service.url
    finally:
        service.stop()


@pytest.fixture(scope="module")
def image_service(docker_client, serving_image, image_run):
    """The serving image's `serve --model /models` on the same publish root, mounted read-only."""
    container = docker_client.containers.run(
        serving_image,
        ["serve", "--model", "/models", "--host", "0.0.0.0", "--port", "8080"],
        volumes={str(image_run.workdir): {"bind": "/models", "mode": "ro"}},
        ports={"8080/tcp": ("127.0.0.1", None)},
        # Inside the container it binds 0.0.0.0, which the service refuses without a write token.
        environment={"CANDIDATES_WRITE_TOKEN": "image-test-token"},
        detach=True,
        remove=False,
    )
    try:
        container.reload()
        binding = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"]
        assert [b["HostIp"] for b in binding] == ["127.0.0.1"], f"published beyond loopback: {binding}"
        url = f"http://127.0.0.1:{binding[0]['HostPort']}"
        deadline = time.monotonic() + 300
        while True:
            container.reload()
            assert container.status == "running", container.logs().decode()[-3000:]
            try:
                wait_until_ready(url, timeout_s=5)
                break
            except (TimeoutError, OSError):
                assert time.monotonic() < deadline, container.logs().decode()[-3000:]
        yield url
    finally:
        container.remove(force=True)


def users(image_run) -> list[str]:
    import pyarrow.parquet as pq

    version_dir = image_run.workdir / "versions" / image_run.version
    ids = sorted(pq.read_table(version_dir / "user_histories.parquet", columns=["user_id"]).column(0).to_pylist())
    return ids[:: max(1, len(ids) // 8)][:8]


def test_host_serve_loads_the_version_the_image_published(host_service, image_run):
    status, body = get(f"{host_service}/readyz")
    assert status == 200 and body["model_version"] == image_run.version


def test_serving_image_answers_as_the_host(host_service, image_service, image_run):
    (host_status, host_ready), (image_status, image_ready) = (
        get(f"{host_service}/readyz"),
        get(f"{image_service}/readyz"),
    )
    # The same answer, but for where the publish root is: the host's path, /models in the container.
    host_ready = json.loads(json.dumps(host_ready).replace(str(image_run.workdir.resolve()), "/models"))
    assert image_status == host_status == 200
    for ready in (image_ready, host_ready):  # when and in which process each loaded its model differ, nothing else
        ready.get("last_reload", {}).pop("at", None)
        assert isinstance(ready.pop("worker_pid"), int)
    assert image_ready == host_ready
    assert get(f"{image_service}/healthz") == (200, {"status": "ok"})
    for user in [*users(image_run), "nobody-knows-me"]:
        path = f"/v1/users/{user}/candidates?k={K}"
        host, image = get(host_service + path), get(image_service + path)
        assert image[0] == host[0] == 200
        host_items, image_items = host[1].pop("candidates"), image[1].pop("candidates")
        assert image[1] == host[1]  # user, version, fallback
        assert [c["article_id"] for c in image_items] == [c["article_id"] for c in host_items]
        assert [c["score"] for c in image_items] == pytest.approx([c["score"] for c in host_items], abs=1e-5)
    assert host[1]["fallback"] is True  # the unknown user got the popular articles from both
