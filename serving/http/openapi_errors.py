"""Every status the service can send, in its OpenAPI document, with the JSON error body."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from serving.http.auth import ADMIN_PREFIX, WRITE_METHODS

LOG = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    status: int
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


# What the layers in front of every handler may answer (serving/http/guards.py, auth.py, server.py),
# and what the handlers of reads and writes may: each operation's OpenAPI entry lists them, so a
# client (and the fuzzer in tests/serving/test_openapi_fuzz.py) knows every status it can get.
EDGE_ERRORS = {
    404: "no such listing, user path or endpoint",
    408: "the request body was not received in time",
    413: "request body too large",
    414: "request target too long",
    422: "invalid parameter or body",
    431: "request headers too large",
    503: "no model loaded yet, or a store did not answer",
}


WRITE_ERRORS = {
    400: "the body is not valid JSON",
    401: "a write token is configured and the request has none",
    403: "wrong write token, or a write on a reachable address without a strong write token",
    409: "the served model cannot embed listings, or a new model version was rejected",
    429: "a reload is running or was too recent",
    507: "the live corpus holds live_max_listings records",
}


def document_errors(app: FastAPI) -> None:
    """Adds the `EDGE_ERRORS` (every operation) and `WRITE_ERRORS` (writes and /admin/*) to the
    app's OpenAPI document, as JSON error bodies."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}"))
        for name, definition in (
            ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}").get("$defs", {}).items()
        ):
            components.setdefault(name, definition)
        components["ErrorBody"].pop("$defs", None)
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                writes = method.upper() in WRITE_METHODS or path.startswith(ADMIN_PREFIX)
                for status, description in {**EDGE_ERRORS, **(WRITE_ERRORS if writes else {})}.items():
                    operation.setdefault("responses", {}).setdefault(
                        str(status), {"description": description, "content": error}
                    )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
