"""Who may write: a bearer token guards every write endpoint and /admin/*.

When a write token is configured (`--write-token`, `CANDIDATES_WRITE_TOKEN`; the older
`CANDIDATES_ADMIN_TOKEN` counts too), `POST /v1/events`, `PUT|POST|DELETE /v1/articles...` and
everything under `/admin/` need `Authorization: Bearer <token>`: no header is 401, a wrong token
403, both as the service's JSON error body. Reads (candidates, health, metrics, docs) stay open.

Without a token the writes are open, which is only acceptable on a loopback address. Two layers
say so, whatever launched the app (`candidates serve`, `uvicorn --factory`, gunicorn workers):
`check_bind` refuses to start `candidates serve` on any other address without a token of at least
`MIN_TOKEN_CHARS`, and `WriteAuth` refuses (403) every write or admin request that arrived on a
non-loopback local address (the ASGI scope's `server`, which every server fills from the
connection's socket) while no such token is configured. A `server` that is no IP address is an
in-process client (TestClient, httpx's ASGITransport) or a Unix socket: not reachable from
another host. The token is compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging

import orjson

LOG = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
WRITE_PREFIXES = ("/v1/events", "/v1/articles")
ADMIN_PREFIX = "/admin/"
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
# The environment variable holding the write token: the service reads it as the `write_token`
# setting (serving/http/settings.py, prefix CANDIDATES_), the live CLIs send it (serving/live/cli.py).
WRITE_TOKEN_ENV = "CANDIDATES_WRITE_TOKEN"
MIN_TOKEN_CHARS = 16  # e.g. `openssl rand -hex 16` gives 32


class InsecureBindError(ValueError):
    """A non-loopback bind without a write token: anyone could write."""


def write_token_of(settings, path: str = "") -> str | None:
    """The token `path` needs: for /admin/* the admin_token if one is set, else the write_token;
    for the write endpoints the write_token, else the admin_token. None: no token configured."""
    write, admin = getattr(settings, "write_token", None), getattr(settings, "admin_token", None)
    if path.startswith(ADMIN_PREFIX):
        return admin or write or None
    return write or admin or None


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_problem(token: str | None) -> str | None:
    """Why `token` cannot guard writes on a reachable address, or None when it can. (Worded so
    that log redaction, which masks the word after "token ", leaves the reason readable.)"""
    if not token:
        return "no write_token is set"
    if len(token) < MIN_TOKEN_CHARS:
        return f"the write_token is shorter than {MIN_TOKEN_CHARS} characters"
    return None


def check_bind(host: str, token: str | None) -> None:
    """Raises InsecureBindError for a non-loopback `host` without a write token of reasonable strength."""
    problem = token_problem(token)
    if problem is not None and not is_loopback(host):
        raise InsecureBindError(
            f"refusing to serve on {host!r}: {problem}, and anyone who can reach it could post "
            "events and change listings. Set a write_token of at least "
            f"{MIN_TOKEN_CHARS} characters (CANDIDATES_WRITE_TOKEN in the environment, or --write-token-file), "
            "or bind 127.0.0.1"  # no "token: x" or "--write-token x" here: the CLI's redaction would mask x
        )


def exposed(scope) -> bool:
    """Whether the request arrived on a non-loopback IP address of this host (see module doc)."""
    server = scope.get("server")
    if not server or not isinstance(server[0], str):
        return False
    try:
        return not ipaddress.ip_address(server[0].strip("[]")).is_loopback
    except ValueError:  # a name (in-process client) or a Unix socket path
        return False


def needs_token(method: str, path: str) -> bool:
    """True for the write endpoints and /admin/*."""
    if path.startswith(ADMIN_PREFIX):
        return True
    return method in WRITE_METHODS and any(path == p or path.startswith(p + "/") for p in WRITE_PREFIXES)


def check_authorization(header: bytes | None, token: str) -> tuple[int, str] | None:
    """None when `header` carries the token; else `(status, message)`: 401 missing, 403 wrong."""
    if not header:
        return 401, "this endpoint needs `Authorization: Bearer <write token>`"
    scheme, _, given = header.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return 401, "the Authorization header must be `Bearer <write token>`"
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return 403, "the write token is not valid"
    return None


class WriteAuth:
    """Pure ASGI middleware: checks the bearer token of write and admin requests.

    The token comes from the settings the lifespan resolved (`app.state.settings`), so a test's
    `dependency_overrides[get_settings]` applies here too.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not needs_token(scope["method"], scope["path"]):
            return await self.app(scope, receive, send)
        settings = getattr(scope["app"].state, "settings", None)
        token = write_token_of(settings, scope["path"]) if settings is not None else None
        if exposed(scope) and (problem := token_problem(token)) is not None:
            LOG.warning(
                "%s %s refused with 403: it arrived on a non-loopback address and %s",
                scope["method"],
                scope["path"],
                problem,
            )
            message = (
                f"writes are refused on this address: {problem} (at least {MIN_TOKEN_CHARS} characters, "
                "CANDIDATES_WRITE_TOKEN or --write-token-file)"
            )
            return await _refuse(send, 403, message)
        if token:
            header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
            problem = check_authorization(header, token)
            if problem is not None:
                status, message = problem
                LOG.info(
                    "%s %s refused with %d (%s)",
                    scope["method"],
                    scope["path"],
                    status,
                    "no token" if status == 401 else "wrong token",
                )
                return await _refuse(send, status, message)
        return await self.app(scope, receive, send)


async def _refuse(send, status: int, message: str) -> None:
    body = orjson.dumps({"error": {"status": status, "message": message}})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def override_refusal(scope, settings) -> tuple[int, str] | None:
    """Whether a read may pick its experiment arm (`?arm=`): like a write, it needs the write token when one
    is configured, and is refused on a non-loopback address without one. None: allowed, else
    `(status, message)`."""
    token = write_token_of(settings)
    if token:
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        problem = check_authorization(header, token)
        return None if problem is None else (problem[0], f"?arm= {problem[1]}")
    if exposed(scope):
        return 403, "?arm= is refused on this address: no write_token is set"
    return None
