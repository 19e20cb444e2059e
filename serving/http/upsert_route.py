"""`PUT /v1/articles/{article_id}` as a pure ASGI route, in front of FastAPI's router.

Why: a listing upsert runs on the event loop (serving/http/live_routes.py, `_store_async`), so every
microsecond of it is a microsecond a candidate request arriving meanwhile waits. FastAPI's way
to the handler (the router matching each route, the exception and exit-stack middlewares,
dependency solving, the path parameter's validation) was about a quarter of an upsert's Python
time at 100 upserts/s (py-spy; figures in docs/live.md). This route answers a PUT whose id is
valid by calling the same `routes_live.upsert_article` the FastAPI handler calls; everything
else (other methods and paths, an id that fails validation, which FastAPI answers with its 422)
goes on to the app unchanged. It sits inside `GuardAndMeasure` and `WriteAuth`, so body limits,
timeouts, metrics and the write token apply to it as to every route.
"""

from __future__ import annotations

from serving.http import live_routes as routes_live
from serving.live.events import valid_article_id

_PREFIX = routes_live.ARTICLES_PATH + "/"


def upsert_target(scope) -> str | None:
    """The article id of a `PUT /v1/articles/{article_id}` this route answers, else None."""
    if scope["type"] != "http" or scope["method"] != "PUT":
        return None
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root + "/"):  # as Starlette's routing reads a path under a root path
        path = path[len(root) :]
    if not path.startswith(_PREFIX):
        return None
    article_id = path[len(_PREFIX) :]
    return article_id if "/" not in article_id and valid_article_id(article_id) else None


async def read_body(receive) -> bytes | None:
    """The whole request body, or None when the client went away before sending it."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class UpsertRoute:
    """Pure ASGI middleware answering listing upserts without FastAPI's routing (module doc)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        article_id = upsert_target(scope)
        if article_id is None:
            return await self.app(scope, receive, send)
        body = await read_body(receive)
        if body is None:  # nothing to answer, and a half-sent change is not applied
            return
        response = await routes_live.upsert_article(scope["app"].state, article_id, body)
        await response(scope, receive, send)
