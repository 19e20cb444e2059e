"""Credentials never appear in logs, error messages or /metrics, whatever path they take there."""

from __future__ import annotations

import logging
import subprocess

import pytest

from homefeed.redact import RedactingFilter, public_message, redact
from tests.support.commands import candidates_command
from tests.support.ports import free_port

pytestmark = pytest.mark.slow

SECRETS = ("hunter2-user-pw", "hunter2-query-pw", "hunter2-token")


@pytest.mark.parametrize(
    "text",
    [
        "redis://app:hunter2-user-pw@cache:6379/0",
        "rediss://cache:6380/0?password=hunter2-query-pw&ssl_cert_reqs=none",
        "redis://hunter2-user-pw@cache:6379",
        "redis://:hunter2-token@hunter2-user-pw@cache:6379/0",  # a raw "@" inside the password
        "Authorization: Bearer hunter2-token",
        "--admin-token hunter2-token --redis-url redis://:hunter2-user-pw@h/0",
        "CANDIDATES_ADMIN_TOKEN=hunter2-token",
        "https://storage.example/x?X-Goog-Signature=hunter2-token&alt=media",
    ],
)
def test_redact_masks_every_form(text):
    cleaned = redact(text)
    assert not any(secret in cleaned for secret in SECRETS), cleaned
    assert "***" in cleaned


def test_public_messages_carry_no_absolute_paths():
    message = public_message("/srv/models/publish/versions/v2/index/articles.faiss does not match")
    assert message == ".../index/articles.faiss does not match"


def test_the_log_filter_masks_arguments_and_tracebacks():
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "cannot reach %s", ("redis://:hunter2-user-pw@h",), None
    )
    try:
        raise ConnectionError("redis://:hunter2-user-pw@h refused")
    except ConnectionError:
        import sys

        record.exc_info = sys.exc_info()
    RedactingFilter().filter(record)
    assert "hunter2" not in record.getMessage() and "hunter2" not in (record.exc_text or "")


def test_a_service_with_a_credentialed_redis_url_never_logs_it(model_dirs, start_service):
    # Redis is down (nothing listens on the port): the service starts, warns on every request it
    # answers from the fallback, and must never print the password while doing so.
    port = free_port()
    url = f"redis://app:hunter2-user-pw@127.0.0.1:{port}/0?password=hunter2-query-pw"
    service = start_service(model_dirs["v1"], "--redis-url", url, env={"CANDIDATES_ADMIN_TOKEN": "hunter2-token"})
    for _ in range(3):
        status, body = service.get("/v1/users/u0001/candidates?k=5")
        assert status == 200 and body["fallback"] is True
    status, ready = service.get("/readyz")
    metrics = ""
    import urllib.request

    with urllib.request.urlopen(service.url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    service.stop()
    log = service.log()
    assert "127.0.0.1" in log and "***" in log  # it did talk about Redis ...
    for secret in SECRETS:  # ... without the secrets
        assert secret not in log, f"{secret} in the service log"
        assert secret not in str(ready) and secret not in metrics
    assert "/tmp/" not in metrics  # no paths in labels either


def test_cli_errors_do_not_echo_credentials(tmp_path):
    histories = tmp_path / "h.parquet"
    histories.write_bytes(b"")
    result = subprocess.run(
        candidates_command(
            "load-histories",
            "--histories",
            histories,
            "--redis-url",
            f"redis://app:hunter2-user-pw@127.0.0.1:{free_port()}/0?password=hunter2-query-pw",
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert not any(secret in output for secret in SECRETS), output[-2000:]
