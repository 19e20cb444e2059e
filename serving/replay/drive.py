"""Replaying a held-out window (serving/replay/window.py) through a running service, in time order.

Each timeline row becomes what a live marketplace would send at that moment:

* `create`: `PUT /v1/articles/{id}` with the listing's title, category, region and `created_at`;
* `remove`: `PUT /v1/articles/{id}` with `{"status": "sold"}` (or `deleted`);
* `search`: `POST /v1/events` with a search item;
* `view`: first `GET /v1/users/{user}/candidates?k=K` (the answer the user would have had), then
  `POST /v1/events` with the view, so the next answer knows it.

A view counts (`answered`) when its user has an earlier view, in the pipeline's data or earlier in
the window, as the evaluation's test views do (each has a history); the first view of a user
nobody has seen is answered too (the service's fallback) but kept apart (`cold_users`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from serving.replay.window import CREATE, REMOVE, SEARCH, VIEW

LOG = logging.getLogger(__name__)

MISS = np.iinfo(np.int64).max  # the rank of a target not in the answer


class ReplayError(RuntimeError):
    """The service refused a replayed request; the message names the row and the answer."""


@dataclass
class Answers:
    """Per answered view (time order): its user and the target's rank in the answer (MISS: absent)."""

    users: list[str] = field(default_factory=list)
    ranks: list[int] = field(default_factory=list)
    fallback: list[bool] = field(default_factory=list)
    cold_users: int = 0
    cold_hits: int = 0
    rejected_views: int = 0  # views the service refused as events (e.g. a listing it does not know)
    requests: int = 0
    seconds: float = 0.0

    def rank_array(self) -> np.ndarray:
        return np.asarray(self.ranks, dtype=np.int64)


def _iso(value: Any) -> str:
    return pd.Timestamp(value).tz_convert("UTC").isoformat().replace("+00:00", "Z")


def _check(response, what: str) -> dict:
    try:
        body = response.json()
    except ValueError:
        body = {"raw": response.text[:200]}
    if response.status_code not in (200, 201):
        raise ReplayError(f"{what}: the service answered {response.status_code}: {body}")
    return body


def replay(
    url: str,
    timeline: pd.DataFrame,
    known_users: set[str],
    k: int = 200,
    token: str | None = None,
    timeout_s: float = 30.0,
) -> Answers:
    """Sends `timeline` to the service at `url` (module docstring); the answers to its views.

    Args:
      known_users: users with a view in the pipeline's data (they have a history at the cut).

    Raises:
      ReplayError: a listing write or an event post was refused as a whole (not a per-item rejection).
    """
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answers = Answers()
    seen_users = set(known_users)
    started = time.monotonic()
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s) as client:
        for row in timeline.itertuples(index=False):
            kind, at = row.kind, _iso(row.at)
            answers.requests += 1
            if kind == CREATE:
                body = {
                    name: getattr(row, name)
                    for name in ("title", "category", "region", "created_at")
                    if isinstance(getattr(row, name), str)
                }
                _check(client.put(f"/v1/articles/{quote(row.article_id, safe='')}", json=body), f"create {row}")
            elif kind == REMOVE:
                status = row.status if row.status in ("sold", "deleted") else "sold"
                path = f"/v1/articles/{quote(row.article_id, safe='')}"
                _check(client.put(path, json={"status": status}), f"remove {row}")
            elif kind == SEARCH:
                item = {"type": "search", "user_id": row.user_id, "query": row.query, "searched_at": at}
                _check(client.post("/v1/events", json={"events": [item]}), f"search {row}")
            elif kind == VIEW:
                answer = _check(
                    client.get(
                        f"/v1/users/{quote(row.user_id, safe='')}/candidates",
                        params={"k": k, "exclude_seen": "true"},
                    ),
                    f"candidates for {row}",
                )
                ids = [c["article_id"] for c in answer.get("candidates", [])]
                rank = ids.index(row.article_id) if row.article_id in ids else MISS
                if row.user_id in seen_users:
                    answers.users.append(row.user_id)
                    answers.ranks.append(rank)
                    answers.fallback.append(bool(answer.get("fallback")))
                else:
                    answers.cold_users += 1
                    answers.cold_hits += rank < k
                    seen_users.add(row.user_id)
                item = {"type": "view", "user_id": row.user_id, "article_id": row.article_id, "viewed_at": at}
                posted = client.post("/v1/events", json={"events": [item]})
                answers.requests += 1
                if posted.status_code == 422:  # the one item was refused: said, counted, the replay goes on
                    answers.rejected_views += 1
                    if answers.rejected_views <= 3:
                        LOG.warning("view %s refused: %s", row, posted.text[:300])
                else:
                    _check(posted, f"view {row}")
            else:
                raise ValueError(f"timeline row of unknown kind {kind!r}: {row}")
    answers.seconds = time.monotonic() - started
    return answers
