"""Settings of the candidate service: the only place serving code reads the environment.

Every field can be set as an environment variable `CANDIDATES_<FIELD>` (e.g.
`CANDIDATES_MODEL=/srv/publish`, `CANDIDATES_REDIS_URL=redis://cache:6379/0`); `candidates serve`
fills them from its options. Secrets never need the command line (where every local user reads
them in the process list): the Redis URL, password included, also comes from `REDIS_URL`, and the
write token from `CANDIDATES_WRITE_TOKEN` or a file (`CANDIDATES_WRITE_TOKEN_FILE`,
`--write-token-file`, e.g. a mounted Kubernetes Secret). The app reads its settings through the `get_settings` dependency, so
tests swap them with `app.dependency_overrides[get_settings] = lambda: ServiceSettings(...)`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from homefeed import features
from serving.store import DEFAULT_REDIS_PREFIX  # the history keys' owner (light: orjson only)

ENV_PREFIX = "CANDIDATES_"


class ServiceSettings(BaseSettings):
    """What `candidates serve` serves and how."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", protected_namespaces=(), populate_by_name=True
    )

    model: Path | None = Field(
        None, description="model directory, or publish root whose LATEST names the version to serve"
    )
    histories: Path | None = Field(
        None,
        description="user_histories.parquet for the embedded store; default: the served model "
        "directory's user_histories.parquet (a publish root carries one per version)",
    )
    redis_url: str | None = Field(
        None,
        repr=False,
        validation_alias=AliasChoices(ENV_PREFIX + "REDIS_URL", "REDIS_URL"),  # and redis_url= (populate_by_name)
        description="read histories from Redis instead of the embedded store (also CANDIDATES_REDIS_URL or "
        "REDIS_URL in the environment: a URL with a password belongs there, not on the command line)",
    )
    redis_prefix: str = Field(DEFAULT_REDIS_PREFIX, description="Redis key prefix of the user histories")
    redis_timeout_s: float = Field(0.05, gt=0, description="one GET slower than this falls back to popular articles")

    default_k: int = Field(200, ge=1, description="k when a request gives none")
    max_k: int = Field(1000, ge=1, description="larger k is refused with 422")
    history_length: int = Field(features.HISTORY_LENGTH, ge=1)
    include_titles: bool = True

    watch_latest: bool = Field(True, description="poll a publish root's LATEST and load new versions")
    watch_interval_s: float = Field(5.0, gt=0, description="seconds between checks of a publish root's LATEST")
    admin_token: str | None = Field(
        None, repr=False, description="when set, POST /admin/reload needs `Authorization: Bearer <token>`"
    )
    reload_min_interval_s: float = Field(
        30.0, ge=0, description="at most one model load per this many seconds (reload, SIGHUP, LATEST); 0: no limit"
    )

    write_token: str | None = Field(
        None,
        repr=False,
        description="when set, POST /v1/events, /v1/articles writes and /admin/* need `Authorization: Bearer <token>` "
        "(also CANDIDATES_WRITE_TOKEN); needed to bind anything but a loopback address",
    )
    write_token_file: Path | None = Field(
        None,
        description="file holding the write token (read at start, surrounding whitespace ignored); keeps it out "
        "of the process list",
    )
    live_store: str | None = Field(
        None,
        description="without --redis-url: the SQLite file (WAL) that keeps live views and listings across "
        "restarts (serving/live/durable.py); `memory` or unset: in the process only. `candidates serve` "
        "defaults it to live.sqlite3 in the state directory (CANDIDATES_STATE_DIR, else ~/.local/state/homefeed-candidates)",
    )
    live_max_users: int = Field(
        1_000_000,
        ge=1,
        description="in-process live views (no Redis): at most this many users; the user written least "
        "recently is forgotten first",
    )
    live_max_listings: int = Field(
        200_000,
        ge=1,
        description="live listing records held; a write that would add a record beyond it (a new listing, or the "
        "first change of a model's listing) is refused with 507; listings already held still change",
    )
    live_ttl_s: int = Field(
        30 * 86_400,
        ge=0,
        description="Redis live views expire this long after a user's last view (0: never)",
    )
    live_sync_interval_s: float = Field(
        0.25, gt=0, description="seconds between reads of other replicas' listing changes"
    )
    listing_age_clock: str = Field(
        "wall",
        pattern="^(wall|events)$",
        description="the time listing ages are computed at when listings are embedded (serving/live/clock.py): "
        "wall (the machine's clock) or events (the latest view or search posted to this process, at least the "
        "model's as_of: for replaying past traffic, `candidates replay`)",
    )

    experiment: Path | None = Field(
        None,
        description="an experiment file (YAML or JSON, serving/experiments/config.py): users split into arms "
        "by a salted hash of their id, each answer says its arm, exposures logged",
    )

    host: str = Field("127.0.0.1", description="interface to bind, 0.0.0.0 for all")
    port: int = Field(8080, ge=0, le=65535, description="TCP port")
    workers: int = Field(
        1,
        ge=1,
        description="worker processes (gunicorn, serving/http/workers.py): the model is loaded once, before they "
        "fork, and shared; a reload replaces them all; live writes need --redis-url when there are several",
    )
    access_log: bool = Field(False, description="log every request (costs latency)")

    # Per-process thread pools: one request is one small TF call and one FAISS query, which are
    # fastest single-threaded; more threads only fight over the cores (scale with --workers).
    tf_threads: int = Field(
        1,
        ge=0,
        description="threads of the towers: TensorFlow's intra/inter-op pools, or NumPy's BLAS for the NumPy towers (0: library defaults)",
    )
    faiss_threads: int = Field(1, ge=0, description="OpenMP threads for FAISS search (0: FAISS default)")
    encoder: str = Field(
        "auto",
        pattern="^(auto|numpy|saved_model)$",
        description="towers: auto (the model's NumPy twin when it has one, proven equal at export, no "
        "TensorFlow; else its SavedModel), numpy (refuse models without it), saved_model",
    )
    max_batch: int = Field(
        32,
        ge=1,
        description="batching: at most this many requests share one user-tower call (serving/recommend/dispatch.py); "
        "1: one call per request",
    )
    server_timing: bool = Field(True, description="add a Server-Timing header with the per-stage split")
    max_request_bytes: int = Field(64 * 1024, ge=1, description="larger request bodies are refused with 413")
    max_url_bytes: int = Field(2048, ge=64, description="longer request targets are refused with 414")
    # The HTTP server's own limits (serving/http/server.py): what it refuses before the app runs.
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="request line + headers larger than this are refused with 431/414 (JSON)"
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="seconds a client has to send its request line and headers (else JSON 408 and the connection closes)",
    )
    body_timeout_s: float = Field(10.0, gt=0, description="a client must send each part of a request body within this")
    keep_alive_s: float = Field(5.0, gt=0, description="idle keep-alive connections are closed after this")

    @model_validator(mode="after")
    def _token_from_file(self) -> ServiceSettings:
        if self.write_token_file is not None and not self.write_token:
            try:
                token = self.write_token_file.read_text().strip()
            except OSError as error:
                raise ValueError(
                    f"cannot read the write token file {self.write_token_file}: {error.strerror}"
                ) from None
            if not token:
                raise ValueError(f"the write token file {self.write_token_file} is empty")
            self.write_token = token
        return self


@lru_cache
def get_settings() -> ServiceSettings:
    return ServiceSettings()
