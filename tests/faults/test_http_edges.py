"""Hostile requests against a real `candidates serve`: always a 4xx with a JSON body, never a 500,
never an absolute path; clients that stall are cut off within the configured deadline."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.faults.harness import SERVE_FLAGS
from tests.support.service import Service

pytestmark = pytest.mark.slow

HEADER_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def service(model_dirs, tmp_path_factory):
    service = Service(
        model_dirs["v1"],
        tmp_path_factory.mktemp("http") / "service.log",
        *SERVE_FLAGS,
        "--header-timeout",
        str(HEADER_TIMEOUT_S),
        "--body-timeout",
        str(HEADER_TIMEOUT_S),
    )
    service.wait_ready()
    yield service
    service.stop()


ODD_REQUESTS = [
    ("GET", "/v1/users/u0001/candidates?k=18446744073709551616", 422),
    ("GET", "/v1/users/u0001/candidates?k=" + "9" * 1000, 422),
    ("GET", "/v1/users/u0001/candidates?k=-1", 422),
    ("GET", "/v1/users/u0001/candidates?k=0", 422),
    ("GET", "/v1/users/u0001/candidates?k=1001", 422),
    ("GET", "/v1/users/u0001/candidates?k=1e3", 422),
    ("GET", "/v1/users/u0001/candidates?k=NaN", 422),
    ("GET", "/v1/users/u0001/candidates?k=", 422),
    ("GET", "/v1/users/u0001/candidates?k=%00", 422),
    ("GET", "/v1/users/u0001/candidates?k=%EF%BC%91", 422),  # a full-width digit one
    ("GET", "/v1/users/u0001/candidates?exclude_seen=maybe", 422),
    ("GET", "/v1/users/" + "u" * 129 + "/candidates", 422),
    ("GET", "/v1/users/%2E%2E%2F%2E%2E/candidates", 404),  # the decoded "/" makes it another route
    ("GET", "/v1/users/%00/candidates", 422),
    ("GET", "/v1/users/%F0%9F%98%80/candidates", 422),
    ("GET", "/v1/users/u0001/candidates?" + "x=1&" * 600, 414),
    ("GET", "/nowhere", 404),
    ("DELETE", "/v1/users/u0001/candidates", 405),
    ("POST", "/admin/reload?force=maybe", 422),
]


@pytest.mark.parametrize("method,path,expected", ODD_REQUESTS, ids=[f"{m} {p[:48]}" for m, p, _ in ODD_REQUESTS])
def test_odd_parameters_get_a_json_4xx(service, method, path, expected):
    status, body, _ = service.request(method, path)
    assert status == expected, body
    assert body["error"]["status"] == status and body["error"]["message"]
    assert "/tmp/" not in json.dumps(body) and "Traceback" not in json.dumps(body)


def read_one_response(sock: socket.socket) -> bytes:
    """One whole HTTP response from `sock`: the head, then exactly content-length body bytes.
    (One recv() may return only part of it: the head and the body can come in separate segments.)"""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    assert len(body) == length, f"{len(body)} body bytes after the head, {length} announced"
    return head + b"\r\n\r\n" + body


def raw_exchange(port: int, payload: bytes, wait_s: float = 10.0) -> tuple[int, dict, float]:
    """Sends `payload` on a fresh connection; (status, JSON body, seconds until the server closed it)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        if payload:
            sock.sendall(payload)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    elapsed = time.monotonic() - started
    head, _, body = received.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n")[0].decode()
    assert b"content-type: application/json" in head.lower(), received[:300]
    return int(status_line.split()[1]), json.loads(body), elapsed


def test_what_the_server_itself_refuses_is_json_too(service):
    # A request line of a megabyte: the server's own limit, before the app.
    status, body, _ = raw_exchange(
        service.port, b"GET /v1/users/u1/candidates?k=" + b"1" * 1_000_000 + b" HTTP/1.1\r\n\r\n"
    )
    assert status in (414, 431) and body["error"]["status"] == status
    # Headers too large.
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 1000) for i in range(40))
    status, body, _ = raw_exchange(service.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert status == 431 and "headers" in body["error"]["message"]
    # Not HTTP at all.
    status, body, _ = raw_exchange(service.port, b"\x16\x03\x01 this is no request\r\n\r\n")
    assert status == 400
    # A body over the limit.
    status, body, _ = raw_exchange(
        service.port, b"POST /admin/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n" + b"z" * 70000
    )
    assert status == 413


def test_silent_and_slow_clients_are_cut_off(service):
    # Connects and sends nothing.
    status, body, elapsed = raw_exchange(service.port, b"")
    assert status == 408 and elapsed < HEADER_TIMEOUT_S + 3
    # Sends half a request and stalls (a half-open client).
    status, body, elapsed = raw_exchange(service.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert status == 408 and elapsed < HEADER_TIMEOUT_S + 3
    # After one good answer on a kept-alive connection, the next request must come in time too.
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", service.port), timeout=15) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = read_one_response(sock)
        assert first.startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # ... and nothing more
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    assert time.monotonic() - started < HEADER_TIMEOUT_S + 6
    assert rest == b"" or b" 408 " in rest.split(b"\r\n")[0]
    # Sends its headers, then half of the body it announced, and stalls.
    status, body, elapsed = raw_exchange(
        service.port,
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        + b'{"events": [',
    )
    assert status == 408 and "body" in body["error"]["message"] and elapsed < HEADER_TIMEOUT_S + 3
    # The service is still answering normally afterwards.
    assert service.get("/v1/users/u0001/candidates?k=5")[0] == 200


def test_the_rest_of_a_refused_body_is_not_read_as_the_next_request(service):
    # A body over the limit is refused (413) before it is read; the client then sends it anyway
    # and, on the same kept-alive connection, a good request. Those body bytes are the old
    # request's, not the head of a new one: the good request must get its own answer.
    body = b"z" * 200_000
    with socket.create_connection(("127.0.0.1", service.port), timeout=15) as sock:
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (2 * 1024 * 1024)
        )
        first = read_one_response(sock)
        assert first.startswith(b"HTTP/1.1 413"), first[:200]
        sock.sendall(body * 10 + b"z" * (2 * 1024 * 1024 - len(body) * 10))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        second = read_one_response(sock)
    assert second.startswith(b"HTTP/1.1 200"), second[:300]


def test_the_service_answers_expect_100_continue_and_kept_alive_requests(service):
    # An endpoint that reads its body, so the server asks for it with an interim 100.
    body = json.dumps(
        {"events": [{"user_id": "u0001", "article_id": "nowhere", "viewed_at": "2026-01-01T00:00:00Z"}]}
    ).encode()
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n"), interim
        sock.sendall(body)
        answer = read_one_response(sock)
        assert answer.split(b" ", 2)[1] == b"422" and b"nowhere" in answer, answer[:300]  # an unknown article
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = read_one_response(sock)
            assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"}"), answer[:200]
