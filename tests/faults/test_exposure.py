"""Writes are never open on a reachable address, whatever launches the app; secrets come from the
environment or files; /readyz names no absolute path.

The factory path is a real `uvicorn --factory ... --host 0.0.0.0` process, reached once through
loopback and once through this host's first non-loopback address.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from serving.http.auth import MIN_TOKEN_CHARS, InsecureBindError, check_bind
from serving.http.settings import ServiceSettings

STRONG = "k" * MIN_TOKEN_CHARS * 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _outward_address() -> str | None:
    """A non-loopback IPv4 address of this host (no packet is sent: UDP connect only picks a route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.254", 9))
            address = sock.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def _call(url: str, method: str = "GET", token: str | None = None, data: bytes | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class _Factory:
    """`uvicorn --factory serving.http.app:create_app_from_environment --host 0.0.0.0`."""

    def __init__(self, model, tmp_path, env: dict):
        self.port = free_port()
        self.log_path = tmp_path / f"uvicorn-{self.port}.log"
        self._log = open(self.log_path, "w")
        command = [sys.executable, "-m", "uvicorn", "--factory", "serving.http.app:create_app_from_environment"]
        self.process = subprocess.Popen(
            [*command, "--host", "0.0.0.0", "--port", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CANDIDATES_MODEL": str(model), "CANDIDATES_WATCH_LATEST": "false", **env},
        )
        deadline = time.monotonic() + 600
        while True:
            assert self.process.poll() is None, self.log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, self.log_path.read_text()[-3000:]
            try:
                if _call(f"http://127.0.0.1:{self.port}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
def outward():
    address = _outward_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    return address


@pytest.mark.parametrize("token", [None, "short"])
def test_the_factory_on_0000_refuses_writes_from_outside_without_a_strong_token(model_dirs, tmp_path, outward, token):
    env = {"CANDIDATES_WRITE_TOKEN": token} if token else {}
    service = _Factory(model_dirs["v1"], tmp_path, env)
    try:
        body = json.dumps({"title": "bike"}).encode()
        outside = f"http://{outward}:{service.port}"
        for method, path in (("PUT", "/v1/articles/x1"), ("POST", "/admin/reload")):
            status, answer = _call(outside + path, method, token=token, data=body if method == "PUT" else None)
            assert status == 403 and "write_token" in answer["error"]["message"], (path, answer)
        assert _call(outside + "/v1/users/u0001/candidates?k=3")[0] == 200, "reads stay open"
        status, _ = _call(f"http://127.0.0.1:{service.port}/v1/articles/x1", "PUT", token=token, data=body)
        assert status == 200, "loopback writes are allowed"
        status, ready = _call(outside + "/readyz")
        assert status == 200 and str(model_dirs["v1"]) not in json.dumps(ready), ready
    finally:
        service.stop()


def test_a_strong_token_from_a_file_opens_writes_from_outside(model_dirs, tmp_path, outward):
    secret = tmp_path / "token"
    secret.write_text(STRONG + "\n")
    service = _Factory(model_dirs["v1"], tmp_path, {"CANDIDATES_WRITE_TOKEN_FILE": str(secret)})
    try:
        outside = f"http://{outward}:{service.port}/v1/articles/x2"
        assert _call(outside, "PUT", data=b"{}")[0] == 401
        assert _call(outside, "PUT", token=STRONG, data=b"{}")[0] == 200
        assert STRONG not in service.log_path.read_text()
    finally:
        service.stop()


def test_secrets_come_from_the_environment_or_files(tmp_path, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://:pw@cache:6379/0")
    assert ServiceSettings().redis_url == "redis://:pw@cache:6379/0"
    monkeypatch.setenv("CANDIDATES_REDIS_URL", "redis://:other@cache:6379/0")
    assert ServiceSettings().redis_url == "redis://:other@cache:6379/0", "the prefixed variable wins"
    assert "other" not in repr(ServiceSettings())
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        ServiceSettings(write_token_file=empty)
    with pytest.raises(ValueError, match="cannot read"):
        ServiceSettings(write_token_file=tmp_path / "missing")
    with pytest.raises(InsecureBindError, match="shorter"):
        check_bind("0.0.0.0", "short")
    check_bind("0.0.0.0", STRONG)
    check_bind("127.0.0.1", None)
