"""The HTTP server's own edges: JSON errors for what uvicorn refuses itself, and slow clients timed out.

The service speaks HTTP/1.1 through uvicorn's httptools protocol (the C parser llhttp: about a
third of the CPU per request of the pure-Python h11 one, measured in docs/serving.md). uvicorn
answers a request it cannot parse with a text/plain 400 of its own before the app ever runs, puts
no limit on the size of a request's head, and waits forever for a client that connects and then
sends its headers slowly or not at all. `JsonHttpProtocol` (passed to uvicorn as `http=`) changes
exactly those things:

  * such errors are JSON like every other error of the service, `{"error": {"status", "message"}}`:
    431 when the request line and headers are over `max_header_bytes`, 414 when the request line
    alone is, 400 for anything else the parser refuses;
  * the request line and headers must arrive within `header_timeout_s` of the connection (or of
    the previous response on a kept-alive connection), else the client gets a JSON 408 and the
    connection is closed. Slow bodies are bounded by the app (serving/http/app.py, `body_timeout_s`);
  * a response's head goes out in the same send as its body (`HeadWithBody`): uvicorn writes
    them separately, so each answer cost two system calls and two TCP segments, the first waking
    the client for a head it cannot use yet. On loopback that head send was a tenth of the GIL time
    of a listing upsert in a py-spy profile (benchmarks/live.py, docs/live.md).

Everything else is uvicorn's own behaviour (`timeout_keep_alive` closes idle connections).

Why a subclass of a private class: uvicorn's own limits do not cover this with httptools
(`h11_max_incomplete_event_size` bounds the head only with the slower h11 parser; nothing bounds the
time a client takes to send it), and gunicorn's `limit_request_line`/`limit_request_fields` apply to
its own parser, which uvicorn workers do not use. It is the service's only use of a dependency's
private API, kept in this module; tests/serving/test_private_api.py fails on any uvicorn release
other than `UVICORN_RELEASE`, so an upgrade re-runs the HTTP edge tests before the pin moves.
"""

from __future__ import annotations

import asyncio
import json
import logging
from http import HTTPStatus
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.http.settings import ServiceSettings, get_settings

LOG = logging.getLogger(__name__)

UVICORN_RELEASE = "0.54.0"  # the release JsonHttpProtocol was checked against (pyproject.toml pins it)
LINGER_S = 2.0  # after refusing a request, how long its remaining input is read and dropped


def raw_json_response(status: int, message: str) -> bytes:
    """A complete HTTP/1.1 response with a JSON error body that closes the connection."""
    body = json.dumps({"error": {"status": status, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class HeadWithBody:
    """The transport a request's cycle writes its response through: the first write (the head)
    is held and sent with the next one (the body, or its first chunk), so a response leaves in one
    send. Anything else the cycle does with the transport reaches the real one; closing sends a
    held head first. An interim `100 Continue` is sent at once (the client waits for it)."""

    __slots__ = ("_head", "_transport")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head, self._head = self._head, None
        if head is not None:
            self._transport.write(head + data)
        elif data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 100 "):
            self._head = bytes(data)
        else:
            self._transport.write(data)

    def close(self) -> None:
        head, self._head = self._head, None
        if head is not None:
            self._transport.write(head)
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...
        return getattr(self._transport, name)


class JsonHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with JSON protocol errors, a limit on the request head and a
    deadline for it."""

    header_timeout_s: float | None = None  # set by `configure`; worker processes read CANDIDATES_*
    max_header_bytes: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if JsonHttpProtocol.header_timeout_s is None or JsonHttpProtocol.max_header_bytes is None:
            settings = get_settings()
            JsonHttpProtocol.header_timeout_s = settings.header_timeout_s
            JsonHttpProtocol.max_header_bytes = settings.max_header_bytes
        self._header_timeout_s = float(JsonHttpProtocol.header_timeout_s)
        self._max_header_bytes = int(JsonHttpProtocol.max_header_bytes)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._timed_cycle: Any = None
        self._discarding = False
        self._in_body = False  # between a request's headers and the end of its body
        self._pending_head = bytearray()  # bytes of the request line + headers being received
        self._answered = 0  # responses completed on this connection

    # The deadline: armed when a connection opens and after each response, cleared once a
    # request's headers are in (uvicorn then creates the request's cycle).
    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self._header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
        self._pending_head.clear()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding:  # the error is sent; swallow the rest of what the client sends
            return
        # Bytes that arrive while the previous request's body is still coming (e.g. the rest of a
        # body refused with 413 before it was read) are that body, which the parser consumes and
        # uvicorn drops; only bytes of a new request count towards its head.
        if self._header_deadline is not None and not self._in_body and self._head_too_large(data):
            return
        super().data_received(data)  # a parser error comes back through send_400_response
        if self.cycle is not None and self.cycle is not self._timed_cycle:
            self._timed_cycle = self.cycle  # a new request's headers arrived in time
            self._disarm()

    def on_headers_complete(self) -> None:
        self._in_body = True
        super().on_headers_complete()
        if self.cycle is not None and not isinstance(self.cycle.transport, HeadWithBody):
            # its task has not run yet; HeadWithBody stands in for the transport (all the cycle calls)
            self.cycle.transport = cast(asyncio.Transport, HeadWithBody(self.cycle.transport))

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._answered += 1
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._arm()

    def _head_too_large(self, data: bytes) -> bool:
        """Refuses (and returns True) once the request line + headers exceed `max_header_bytes`.

        The parser itself has no limit, so the head is measured here as it comes in.
        """
        limit = self._max_header_bytes
        self._pending_head += data[: limit + 4]
        head_end = self._pending_head.find(b"\r\n\r\n")
        if (head_end == -1 and len(self._pending_head) <= limit) or 0 <= head_end <= limit:
            return False
        line_end = self._pending_head.find(b"\r\n")
        if line_end == -1 or line_end > limit:
            status, message = 414, f"request line over {limit} bytes"
        else:
            status, message = 431, f"request line and headers over {limit} bytes"
        LOG.info("refused a request from %s: %s", self.client, message)
        self._refuse(status, message)
        return True

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        if self._answered and not self._pending_head:  # an idle kept-alive connection: just close it
            self.transport.close()
            return
        LOG.info("closing a connection from %s: no complete request within %.0fs", self.client, self._header_timeout_s)
        self._refuse(408, f"no complete request line and headers within {self._header_timeout_s:g}s")

    def send_400_response(self, msg: str) -> None:
        LOG.info("refused a request from %s: %s", self.client, msg)
        self._refuse(400, "malformed HTTP request")

    def _refuse(self, status: int, message: str) -> None:
        """Sends the JSON error, then closes gently: half-close, read and drop what still comes for
        a moment, then close. Closing with unread input would reset the connection, and a reset can
        destroy the answer before the client reads it."""
        self._disarm()
        self._discarding = True
        self.transport.write(raw_json_response(status, message))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def uvicorn_options(settings: ServiceSettings) -> dict[str, Any]:
    """The uvicorn.run/Config options that apply the service's server limits (and set this process's)."""
    JsonHttpProtocol.header_timeout_s = settings.header_timeout_s
    JsonHttpProtocol.max_header_bytes = settings.max_header_bytes
    return {
        "http": JsonHttpProtocol,
        "timeout_keep_alive": settings.keep_alive_s,
    }
