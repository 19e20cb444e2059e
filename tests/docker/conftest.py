"""Fixtures of the image tests: a real Docker daemon, the images built once per session with the
Makefile's own targets (`make base-image`, `make serving-image`, `make image`), and one pipeline
run in the pipeline image whose publish root the serving tests reuse.

Every test module here is marked `docker` and `slow` (its `pytestmark`). Without a reachable
daemon they are skipped with the reason, except under CI (`CI` set), where that is a failure:
.ci/run starts a daemon.

The base image: $HOMEFEED_TEST_BASE_IMAGE when set; else python:3.11-slim-bookworm or
homefeed-base:bookworm when the daemon already has one; else python:3.11-slim-bookworm pulled
where a registry answers; else `make base-image` (debootstrap, no registry needed), which stays
for later sessions.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from homefeed import __version__

ROOT = Path(__file__).resolve().parents[2]
PIPELINE_IMAGE = f"homefeed-candidates:{__version__}"
SERVING_IMAGE = f"homefeed-candidates-serving:{__version__}"
OFFICIAL_BASE = "python:3.11-slim-bookworm"
LOCAL_BASE = "homefeed-base:bookworm"
BUILD_TIMEOUT_S = 1800

# Small but real: the point is the wiring through the image, not model quality.
SAMPLE = {"users": 300, "articles": 900, "days": 14, "seed": 11}
PIPELINE_PARAMS = {"epochs": 3, "batch_size": 256, "embedding_dim": 16, "output_dim": 16}


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as error:
        reason = f"no Docker daemon reachable ({type(error).__name__}: {error}); start one, e.g. dockerd"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: under CI the image tests must run (.ci/run starts a daemon)")
        pytest.skip(reason)
    yield client
    client.close()


def make(target: str, log: Path, **variables: str) -> None:
    """`make TARGET VAR=value...` in the repository; the tail of its output on failure."""
    argv = ["make", "--no-print-directory", target, *(f"{k}={v}" for k, v in variables.items())]
    started = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.run(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S)
    output = log.read_text()
    assert process.returncode == 0, f"{' '.join(argv)} failed:\n{output[-4000:]}"
    print(f"{' '.join(argv)}: {time.monotonic() - started:.0f} s")


def _has_image(client, name: str) -> bool:
    import docker

    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


@pytest.fixture(scope="session")
def build_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("build-logs")


@pytest.fixture(scope="session")
def base_image(docker_client, build_logs) -> str:
    chosen = os.environ.get("HOMEFEED_TEST_BASE_IMAGE")
    if chosen:
        return chosen
    if _has_image(docker_client, OFFICIAL_BASE):
        return OFFICIAL_BASE
    if _has_image(docker_client, LOCAL_BASE):
        return LOCAL_BASE
    try:  # a registry answers where there is one; offline the daemon refuses at once
        docker_client.images.pull(OFFICIAL_BASE)
        return OFFICIAL_BASE
    except Exception as error:
        print(f"cannot pull {OFFICIAL_BASE} ({type(error).__name__}); building {LOCAL_BASE} with make base-image")
    if not _has_image(docker_client, LOCAL_BASE):
        make("base-image", build_logs / "base-image.log", LOCAL_BASE_IMAGE=LOCAL_BASE)
    return LOCAL_BASE


@pytest.fixture(scope="session")
def serving_image(docker_client, base_image, build_logs) -> str:
    make("serving-image", build_logs / "serving-image.log", BASE_IMAGE=base_image, SERVING_IMAGE=SERVING_IMAGE)
    return SERVING_IMAGE


@pytest.fixture(scope="session")
def pipeline_image(docker_client, base_image, build_logs) -> str:
    make("image", build_logs / "image.log", BASE_IMAGE=base_image, IMAGE=PIPELINE_IMAGE)
    return PIPELINE_IMAGE


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory) -> dict:
    from homefeed.sample.marketplace import SampleDataConfig, write_sample_data

    return write_sample_data(tmp_path_factory.mktemp("sample"), SampleDataConfig(**SAMPLE))


@pytest.fixture(scope="session")
def image_run(pipeline_image, sample_data, tmp_path_factory):
    """The whole pipeline through kfp.local, every task in a container of the pipeline image."""
    import io

    from pipeline.run_local import run_local

    workdir = tmp_path_factory.mktemp("published-by-image")
    workdir.chmod(0o755)  # pytest's temporary directories are private; the service runs as uid 1000
    console = io.StringIO()
    try:
        result = run_local(
            sample_data["events_path"],
            sample_data["articles_path"],
            workdir,
            PIPELINE_PARAMS,
            console=console,
            image=pipeline_image,
        )
    except RuntimeError as error:
        pytest.fail(f"the pipeline failed in the image: {error}\n{console.getvalue()[-3000:]}")
    print(f"pipeline in {pipeline_image}: {result.seconds:.0f} s, stages {result.stage_seconds}")
    return result
