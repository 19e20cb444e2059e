"""`candidates query`: ask a running service for a user's candidates and print them as a table."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

LOG = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8080"


class ServiceError(RuntimeError):
    """The service could not be reached or answered with an error; the message says which."""


def fetch_candidates(
    user_id: str, url: str = DEFAULT_URL, k: int = 200, exclude_seen: bool = True, timeout_s: float = 10.0
) -> dict[str, Any]:
    """GET `/v1/users/{user_id}/candidates` from the service at `url`; the parsed JSON body.

    Raises:
      ServiceError: connection refused / timed out, or a non-200 answer (with the service's message).
    """
    import httpx

    endpoint = f"{url.rstrip('/')}/v1/users/{quote(user_id, safe='')}/candidates"
    params: dict[str, str | int] = {"k": k, "exclude_seen": str(exclude_seen).lower()}
    try:
        response = httpx.get(endpoint, params=params, timeout=timeout_s)
    except httpx.ConnectError as error:
        raise ServiceError(
            f"cannot reach the candidate service at {url} ({error}); is `candidates serve` running there?"
        ) from None
    except httpx.TimeoutException:
        raise ServiceError(f"the candidate service at {url} did not answer within {timeout_s:g}s") from None
    except httpx.HTTPError as error:
        raise ServiceError(f"request to {endpoint} failed: {error}") from None
    try:
        body = response.json()
    except json.JSONDecodeError:
        raise ServiceError(
            f"{endpoint} answered {response.status_code} with non-JSON: {response.text[:200]!r}"
        ) from None
    if response.status_code != 200:
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        raise ServiceError(f"the service refused the request ({response.status_code}): {message or body}")
    return body


def wait_until_ready(
    url: str = DEFAULT_URL,
    process: Any = None,
    timeout_s: float = 120.0,
    poll_s: float = 0.2,
    log_path: Any = None,
) -> dict[str, Any]:
    """Poll `url`/readyz until it answers 200 (model and index loaded); its JSON body.

    Args:
      process: the service's `subprocess.Popen`, if this caller started it: its exit ends the wait
        at once instead of at the timeout.
      log_path: where that process writes its output; the tail goes into the error message.

    Raises:
      ServiceError: the process exited before the service was ready (with its status and output).
      TimeoutError: not ready within `timeout_s`.
    """
    import time
    import urllib.error
    import urllib.request
    from pathlib import Path

    readyz = f"{url.rstrip('/')}/readyz"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            if log_path is not None:
                output = Path(log_path).read_text(errors="replace")
            elif process.stdout is not None:
                output = process.stdout.read()
                output = output.decode(errors="replace") if isinstance(output, bytes) else output
            else:
                output = ""
            raise ServiceError(
                f"the service exited with status {process.returncode} before it was ready:\n{output[-3000:]}"
            )
        try:
            with urllib.request.urlopen(readyz, timeout=2) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError):
            time.sleep(poll_s)
    raise TimeoutError(
        f"the service at {url} was not ready within {timeout_s:.0f}s" + (f"; log: {log_path}" if log_path else "")
    )


def format_candidates(body: dict[str, Any]) -> str:
    """A readable table: a header line, then rank, article id, score and title per candidate."""
    candidates = body.get("candidates", [])
    kind = f"fallback ({body.get('fallback_reason')})" if body.get("fallback") else "personalised"
    lines = [
        f"user {body.get('user_id')}  model {body.get('model_version')}  {kind}  {len(candidates)} candidates",
    ]
    if not candidates:
        return "\n".join(lines)
    width = max(len("article"), *(len(c["article_id"]) for c in candidates))
    lines.append(f"{'rank':>4}  {'article':<{width}}  {'score':>9}  title")
    for rank, c in enumerate(candidates, 1):
        lines.append(f"{rank:>4}  {c['article_id']:<{width}}  {c['score']:>9.4f}  {c.get('title') or ''}".rstrip())
    return "\n".join(lines)
