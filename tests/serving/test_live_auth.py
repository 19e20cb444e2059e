"""Write auth (serving/http/auth.py): which requests need the token, the answers, the bind check."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from serving.http.auth import InsecureBindError, check_authorization, check_bind, needs_token


def test_writes_and_admin_need_the_token_reads_do_not():
    assert needs_token("POST", "/v1/events") and needs_token("PUT", "/v1/articles/a1")
    assert needs_token("DELETE", "/v1/articles/a1") and needs_token("POST", "/v1/articles")
    assert needs_token("POST", "/admin/reload") and needs_token("GET", "/admin/anything")
    assert not needs_token("GET", "/v1/articles/a1") and not needs_token("GET", "/v1/users/u1/candidates")
    assert not needs_token("GET", "/metrics") and not needs_token("POST", "/v1/eventsx")


def test_missing_is_401_wrong_is_403():
    assert check_authorization(None, "tok")[0] == 401
    assert check_authorization(b"Basic dG9r", "tok")[0] == 401
    assert check_authorization(b"Bearer ", "tok")[0] == 401
    assert check_authorization(b"Bearer other", "tok")[0] == 403
    assert check_authorization(b"Bearer tok", "tok") is None and check_authorization(b"bearer tok", "tok") is None


def test_only_loopback_may_go_without_a_token():
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.5", "[::1]"):
        check_bind(host, None)
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.com"):
        with pytest.raises(InsecureBindError, match="no write_token"):
            check_bind(host, None)
        with pytest.raises(InsecureBindError, match="shorter than 16"):
            check_bind(host, "tok")
        check_bind(host, "t" * 16)


def test_serve_refuses_a_public_bind_without_a_token(model_v1):
    result = subprocess.run(
        [sys.executable, "-m", "homefeed_cli", "serve", "--model", str(model_v1), "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "no write_token is set" in result.stderr
    # The advice must survive the CLI's credential masking readably (it once read
    # "token: *** who can reach it ... Set --write-token *** CANDIDATES_WRITE_TOKEN)").
    assert "***" not in result.stderr and "anyone who can reach it" in result.stderr
    assert "--write-token" in result.stderr and "CANDIDATES_WRITE_TOKEN" in result.stderr


def test_the_token_is_never_logged(model_v1, caplog):
    from live_http import running_service

    from serving.http.settings import ServiceSettings

    secret = "very-secret-token-123"
    caplog.set_level(logging.DEBUG)
    settings = ServiceSettings(model=model_v1, write_token=secret)
    assert secret not in repr(settings)
    with running_service(settings) as client:
        assert (
            client.post("/v1/events", json={"events": []}, headers={"Authorization": "Bearer wrong"}).status_code == 403
        )
        assert (
            client.post("/v1/events", json={"events": []}, headers={"Authorization": f"Bearer {secret}"}).status_code
            == 200
        )
    assert secret not in caplog.text


def test_admin_token_keeps_guarding_admin_when_both_are_set():
    from serving.http.auth import write_token_of
    from serving.http.settings import ServiceSettings

    both = ServiceSettings(write_token="w", admin_token="a")
    assert write_token_of(both, "/admin/reload") == "a" and write_token_of(both, "/v1/events") == "w"
    only_admin = ServiceSettings(admin_token="a")
    assert write_token_of(only_admin, "/v1/events") == "a" and write_token_of(ServiceSettings(), "/v1/events") is None
    assert "'a'" not in repr(both) and "'w'" not in repr(both)


def test_the_write_token_variable_is_the_one_the_settings_read(monkeypatch):
    # serving.http.auth owns the name; the service's settings must read exactly that variable.
    from serving.http.auth import WRITE_TOKEN_ENV
    from serving.http.settings import ServiceSettings

    monkeypatch.setenv(WRITE_TOKEN_ENV, "s3cret-token")
    assert ServiceSettings().write_token == "s3cret-token"
