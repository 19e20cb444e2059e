"""The one private API of a dependency the service uses: serving/http/server.py subclasses uvicorn's
`HttpToolsProtocol` (JSON refusals, a limit and a deadline for the request head, one send per
response). This fails on any other uvicorn release, so an upgrade re-checks that subclass
(tests/faults/test_http_edges.py, tests/faults/test_response_sends.py) before the pin moves."""

from __future__ import annotations

import inspect

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.http import server


def test_uvicorn_is_the_release_the_protocol_subclass_was_written_for():
    assert uvicorn.__version__ == server.UVICORN_RELEASE, (
        f"uvicorn {uvicorn.__version__} is installed; serving/http/server.py was checked against "
        f"{server.UVICORN_RELEASE}: re-run the HTTP edge tests, then update UVICORN_RELEASE"
    )


def test_the_overridden_methods_still_exist_with_their_signatures():
    for name in (
        "connection_made",
        "connection_lost",
        "data_received",
        "on_headers_complete",
        "on_message_complete",
        "on_response_complete",
        "send_400_response",
    ):
        base = getattr(HttpToolsProtocol, name, None)
        assert base is not None, f"HttpToolsProtocol.{name} is gone"
        mine = getattr(server.JsonHttpProtocol, name)
        assert len(inspect.signature(base).parameters) == len(inspect.signature(mine).parameters), name
    for attribute in ("cycle", "transport", "loop", "client"):  # set by HttpToolsProtocol, read by the subclass
        assert attribute in inspect.getsource(HttpToolsProtocol), attribute
