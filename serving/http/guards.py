"""The HTTP edges of the app: JSON error bodies, size and time limits, per-request metrics.

`GuardAndMeasure` is a pure ASGI middleware (cheaper than `BaseHTTPMiddleware`: no extra task per
request, which matters at ~1 ms answers); `error_response` is the one shape of every error,
`{"error": {"status", "message", "details"?}}`.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

from fastapi.responses import Response

from homefeed.redact import public_message
from serving.http import live_routes as routes_live
from serving.http.settings import ServiceSettings
from serving.http.workers import live_writes_refusal
from serving.metrics import ServiceMetrics

CANDIDATES_PREFIX = "/v1/users/"
DEFAULT_SETTINGS = ServiceSettings.model_construct()  # limits before the lifespan ran
KNOWN_ENDPOINTS: tuple[str, ...] = ("/healthz", "/readyz", "/metrics", "/admin/reload", "/docs", "/openapi.json")
KNOWN_ENDPOINTS += (routes_live.EVENTS_PATH, routes_live.ARTICLES_PATH)


def error_response(status: int, message: str, details: list[dict[str, Any]] | None = None, headers=None) -> Response:
    """The JSON error body. Never fails: odd values (huge integers, bytes, NaN) become strings, and
    credentials and absolute paths are cut from the message (homefeed/redact.py)."""
    body: dict[str, Any] = {"status": status, "message": public_message(message)}
    if details:
        body["details"] = jsonable(details)
    return Response(
        json.dumps({"error": body}, ensure_ascii=False, allow_nan=False).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def endpoint_label(path: str) -> str:
    """A bounded label for metrics: never the raw path (user ids would explode cardinality)."""
    if path.startswith(CANDIDATES_PREFIX) and path.endswith("/candidates"):
        return "candidates"
    return path if path in KNOWN_ENDPOINTS else "other"


class _BodyTooLarge(Exception):
    pass


class _BodyTooSlow(Exception):
    pass


class GuardAndMeasure:
    """Pure ASGI middleware: refuses oversized requests (414/413), counts and times every request.

    Cheaper than `BaseHTTPMiddleware` (no extra task per request), which matters at ~1 ms answers.

    Limits come from the settings the lifespan resolved (`app.state.settings`), so a
    `dependency_overrides[get_settings]` swap applies here too.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        path = scope["path"]
        state = scope["app"].state
        metrics: ServiceMetrics = state.metrics
        settings: ServiceSettings = state.settings or DEFAULT_SETTINGS
        max_url_bytes, max_request_bytes = (
            settings.max_url_bytes,
            routes_live.body_limit(path, settings.max_request_bytes),
        )
        label = endpoint_label(path)
        status_holder = [500]

        async def send_and_record(message):
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
            await send(message)

        target_bytes = len(scope.get("raw_path") or path.encode()) + len(scope.get("query_string", b""))
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        response = None
        if target_bytes > max_url_bytes:
            response = error_response(414, f"request target is {target_bytes} bytes; the limit is {max_url_bytes}")
        elif declared is not None and (not declared.isdigit() or int(declared) > max_request_bytes):
            response = error_response(
                413, f"request body of {declared.decode(errors='replace')} bytes; the limit is {max_request_bytes}"
            )
        elif (refusal := live_writes_refusal(scope["method"], path, settings)) is not None:
            response = error_response(503, refusal)
        try:
            if response is not None:
                await response(scope, receive, send_and_record)
                return
            received = [0]
            body_done = [False]
            body_timeout_s = settings.body_timeout_s

            async def bounded_receive():
                if body_done[0]:  # afterwards only a disconnect can come: no deadline
                    return await receive()
                try:  # a client that stops sending its body half-way is not waited for
                    async with asyncio.timeout(body_timeout_s):  # a timer only; wait_for made a task
                        message = await receive()
                except TimeoutError:
                    raise _BodyTooSlow from None
                if message["type"] == "http.request":
                    received[0] += len(message.get("body", b""))
                    if received[0] > max_request_bytes:
                        raise _BodyTooLarge
                    body_done[0] = not message.get("more_body", False)
                return message

            try:
                await self.app(scope, bounded_receive, send_and_record)
            except _BodyTooLarge:
                await error_response(413, f"request body over {max_request_bytes} bytes")(
                    scope, receive, send_and_record
                )
            except _BodyTooSlow:
                await error_response(408, f"request body not received within {body_timeout_s:g}s")(
                    scope, receive, send_and_record
                )
        finally:  # also for errors that escape to the server's 500 handler
            metrics.requests.labels(label, str(status_holder[0])).inc()
            metrics.latency.labels(label).observe(time.perf_counter() - started)


def jsonable(value: Any) -> Any:
    """Validation details made JSON-safe: bytes, huge integers, NaN and odd objects become strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, str)):
        return value if not isinstance(value, str) else public_message(value[:200])
    if isinstance(value, int):
        return value if abs(value) < 2**53 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return public_message(value[:200].decode("utf-8", errors="replace"))
    return public_message(str(value)[:200])
