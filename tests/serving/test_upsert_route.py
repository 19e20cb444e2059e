"""serving/http/upsert_route.py: which requests the pure ASGI upsert route answers (everything else
goes on to FastAPI, whose validation answers bad ids); its answers are checked over real HTTP in
test_live_api.py."""

from __future__ import annotations

import pytest

from serving.http.upsert_route import upsert_target


def scope(method: str, path: str, root_path: str = "") -> dict:
    return {"type": "http", "method": method, "path": path, "root_path": root_path}


@pytest.mark.parametrize(
    ("method", "path", "root_path", "expected"),
    [
        ("PUT", "/v1/articles/a000001", "", "a000001"),
        ("PUT", "/v1/articles/listing with spaces é", "", "listing with spaces é"),
        ("PUT", "/api/v1/articles/a1", "/api", "a1"),  # behind a proxy's root path
        ("PUT", "/v1/articles/a1", "/api", "a1"),  # a root path the server did not prefix
        ("GET", "/v1/articles/a1", "", None),
        ("DELETE", "/v1/articles/a1", "", None),
        ("POST", "/v1/articles", "", None),
        ("PUT", "/v1/articles", "", None),
        ("PUT", "/v1/articles/", "", None),  # no id: FastAPI's 404/405
        ("PUT", "/v1/articles/a1/", "", None),
        ("PUT", "/v1/articles/a/b", "", None),
        ("PUT", "/v1/articlesX/a1", "", None),
        ("PUT", "/v1/articles/a\x00", "", None),  # bad ids: FastAPI's 422
        ("PUT", "/v1/articles/ab\n", "", None),
        ("PUT", "/v1/articles/\ufffd", "", None),
        ("PUT", "/v1/articles/" + "x" * 257, "", None),
    ],
)
def test_only_puts_of_a_valid_listing_id_are_taken(method, path, root_path, expected):
    assert upsert_target(scope(method, path, root_path)) == expected


def test_other_scopes_go_on():
    assert upsert_target({"type": "websocket", "path": "/v1/articles/a1"}) is None
    assert upsert_target({"type": "lifespan"}) is None
