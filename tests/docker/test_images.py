"""The two images as built by `make image` / `make serving-image`: they run, as a non-root user,
with nothing in any layer that should not be there (the build's CA secret, proxies, caches,
sources, tests or data), and the serving image without the pipeline's stack.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(3600)]

FORBIDDEN_IN_SERVING = ("apache_beam", "kfp", "google.cloud.bigquery", "tensorflow_transform", "tfx_bsl", "bqemulator")
PROJECT_PACKAGES = ("homefeed", "homefeed_cli", "components", "pipeline", "trainer", "serving", "sql")


@pytest.fixture(scope="module", params=["pipeline", "serving"])
def image(request) -> str:
    return request.getfixturevalue(f"{request.param}_image")


def run(client, image: str, *args: str, entrypoint=None, user=None) -> str:
    """`docker run --rm IMAGE ARGS...`: its output (stdout and stderr); fails on a non-zero exit."""
    import docker

    try:
        output = client.containers.run(
            image,
            list(args),
            entrypoint=entrypoint,
            user=user,
            remove=True,
            stdout=True,
            stderr=True,
            network_disabled=True,
        )
    except docker.errors.ContainerError as error:
        pytest.fail(f"docker run {image} {' '.join(args)} exited {error.exit_status}: {error.stderr!r}")
    return output.decode()


def shell(client, image: str, script: str, user=None) -> str:
    return run(client, image, "-c", script, entrypoint=["/bin/sh"], user=user)


def test_docker_run_image_help_lists_the_commands(docker_client, image):
    out = run(docker_client, image, "--help")
    assert "usage: candidates" in out
    for command in ("serve", "query", "extract", "pipeline"):
        assert command in out


def test_serving_image_help_of_serve(docker_client, serving_image):
    out = run(docker_client, serving_image, "serve", "--help")
    assert "--model" in out and "--redis-url" in out


def test_images_run_as_the_unprivileged_user(docker_client, image):
    config = docker_client.images.get(image).attrs["Config"]
    assert config["User"] == "homefeed"
    assert config["Entrypoint"] == ["candidates"]
    assert shell(docker_client, image, "id -u; id -g").split() == ["1000", "1000"]


def test_serving_image_has_no_pipeline_stack(docker_client, serving_image):
    script = (
        "import importlib.util as u, sys\n"
        "def found(name):\n"
        "    try:\n"
        "        return u.find_spec(name) is not None\n"
        "    except ModuleNotFoundError:  # its parent package is missing\n"
        "        return False\n"
        f"present = [m for m in {FORBIDDEN_IN_SERVING!r} if found(m)]\n"
        "print('present:', present); sys.exit(1 if present else 0)"
    )
    run(docker_client, serving_image, "-c", script, entrypoint=["python"])


def _ca_file() -> Path | None:
    """The CA bundle `make` passed as the build secret (Makefile: PIP_CERT, else SSL_CERT_FILE)."""
    for name in ("PIP_CERT", "SSL_CERT_FILE"):
        if os.environ.get(name) and Path(os.environ[name]).is_file():
            return Path(os.environ[name])
    return None


def test_history_and_config_carry_no_secret_or_proxy(docker_client, image):
    attrs = docker_client.images.get(image).attrs
    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
    leaked = {
        k
        for k in env
        if k.lower().endswith("_proxy")
        or k in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "UV_INDEX_URL", "PIP_INDEX_URL")
    }
    assert not leaked, f"build-time settings left in the image's environment: {leaked}"
    history = " ".join(step.get("CreatedBy", "") for step in docker_client.images.get(image).history())
    assert "BEGIN CERTIFICATE" not in history
    ca = _ca_file()
    if ca is not None:
        first_line = next(line for line in ca.read_text().splitlines() if line and not line.startswith(("-", "#")))
        assert first_line not in history
    for name, value in os.environ.items():
        if name.lower().endswith("_proxy") and value:
            assert value not in history, f"{name} recorded in the image history"


def _private_certificates(client, image: str, ca: Path) -> list[str]:
    """One base64 line of each certificate in the build's CA secret that the image's own public CA
    bundles (Debian's, certifi's copies) lack, i.e. the proxy's CA: it must be in no file of the image."""
    pem = re.compile(r"-----BEGIN CERTIFICATE-----\n(.*?)-----END CERTIFICATE-----", re.S)
    bundles = "cat /etc/ssl/certs/ca-certificates.crt $(find / -xdev -name cacert.pem -path '*certifi*')"
    own = {block.strip() for block in pem.findall(shell(client, image, bundles))}
    extra = [block.strip() for block in pem.findall(ca.read_text()) if block.strip() not in own]
    return [block.splitlines()[len(block.splitlines()) // 2] for block in extra]


def test_no_secret_cache_source_or_test_data_in_the_file_system(docker_client, image):
    ca = _ca_file()
    private = _private_certificates(docker_client, image, ca) if ca is not None else []
    if private:  # the proxy's CA lines, searched in every file (grep exits 1 when none matches)
        found = shell(
            docker_client,
            image,
            "grep -rlsF "
            + " ".join(f"-e '{line}'" for line in private)
            + " / --exclude-dir=proc --exclude-dir=sys || true",
            user="root",
        )
        assert not found.strip(), f"the build's CA secret was baked into {found.split()}"
    files = shell(docker_client, image, "find / -xdev \\( -path /proc -o -path /sys \\) -prune -o -print", user="root")
    paths = files.splitlines()
    bad = [
        p
        for p in paths
        # (/src and /opt/uv stay as empty mount points of the build's bind mounts)
        if p.startswith(("/run/secrets/", "/src/", "/root/.cache/", "/home/homefeed/.cache/", "/tmp/", "/opt/uv/"))
        or "/.cache/" in p
        or (
            p.startswith("/var/lib/apt/lists/") and not p.endswith(("/lists/lock", "/lists/partial", "/lists/auxfiles"))
        )
        or (
            p.endswith((".deb", ".git", "/.venv", ".parquet", ".tfrecord.gz", "/events.csv", "/articles.csv"))
            and "-packages/" not in p
        )
    ]
    assert not bad, f"unexpected files in the image: {bad[:20]}"
    for package in PROJECT_PACKAGES:
        installed = [p for p in paths if f"-packages/{package}/" in p]
        assert installed, f"project package {package} not installed"
        tests = [p for p in installed if "/tests/" in p or p.rsplit("/", 1)[-1].startswith("test_")]
        assert not tests, f"test files installed: {tests[:5]}"
