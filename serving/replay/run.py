"""`candidates replay`: hold out, run the pipeline, serve, replay, compare (one function, `run_replay`).

1. `window.hold_out` splits the input tables before the pipeline sees them;
2. `candidates pipeline run-local` runs on the pre-cut tables (a subprocess: the very command a
   user runs), with `as_of` = the cut, and publishes into `WORKDIR/publish`;
3. `candidates serve` serves the published model on a free loopback port, its listing ages
   following the replayed events (`--listing-age-clock events`, serving/live/clock.py), live state
   in memory only;
4. `drive.replay` sends the held-out window through HTTP in time order;
5. `score` computes recall@K of the answers with a bootstrap interval over users and sets it
   beside the evaluation's own figure (evaluation.json of the run: whatever protocol it used).

The result is printed as a table and appended as one JSON line to `results` (default
benchmarks/results/replay.jsonl when run from the repository).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from serving.replay import drive, score, window

LOG = logging.getLogger(__name__)

# With no earlier version in a fresh publish root the gate still has a recall floor; the replay
# measures whatever the evaluation measured, so it publishes any model the pipeline finished.
REPLAY_PARAMETERS = {"min_recall_at_200": "0"}
READY_TIMEOUT_S = 300.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _candidates(*argv: Any) -> list[str]:
    return [sys.executable, "-m", "homefeed_cli", *map(str, argv)]


def run_pipeline(held: window.HeldOut, workdir: Path, parameters: Mapping[str, str]) -> dict[str, Any]:
    """`candidates pipeline run-local --json` on the pre-cut tables; its JSON result.

    Raises:
      RuntimeError: the run failed (with the tail of its output), or published nothing.
    """
    argv: list[Any] = ["pipeline", "run-local", "--events", held.events_path, "--articles", held.articles_path]
    if held.searches_path:
        argv += ["--searches", held.searches_path]
    params = {**REPLAY_PARAMETERS, **({"as_of": held.cut} if held.cut else {}), **parameters}
    argv += ["--workdir", workdir, "--json"]
    for name, value in params.items():
        argv += ["--param", f"{name}={value}"]
    out_path = workdir.parent / "run-local.out"
    LOG.info("running the pipeline on the pre-cut data (output in %s)", out_path)
    with open(out_path, "w") as out:
        process = subprocess.run(_candidates(*argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    output = out_path.read_text(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"candidates pipeline run-local failed ({process.returncode}):\n{output[-3000:]}")
    start = output.rfind("\n{\n")
    result = json.loads(output[start + 1 :]) if start >= 0 else None
    if not isinstance(result, dict):
        raise RuntimeError(f"candidates pipeline run-local printed no JSON result; output in {out_path}")
    if not result.get("published"):
        raise RuntimeError(f"the pipeline published nothing ({result.get('reason')}): there is no model to serve")
    return result


def read_evaluation(result: Mapping[str, Any]) -> dict[str, Any]:
    """The run's evaluation.json: the evaluate task's, else the published version's copy."""
    candidates = [Path(result["evaluation_dir"]) / "evaluation.json"]
    if result.get("published"):
        candidates.append(Path(result["workdir"]) / "versions" / str(result["version"]) / "evaluation.json")
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text())
    raise FileNotFoundError(f"no evaluation.json at {[str(p) for p in candidates]}")


class ServedModel:
    """`candidates serve` on `model` in a subprocess (a context manager: stopped on exit)."""

    def __init__(self, model: Path, log_path: Path, flags: Sequence[str] = ()):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._flags = [
            "--port",
            str(self.port),
            "--host",
            "127.0.0.1",
            "--listing-age-clock",
            "events",
            "--live-store",
            "memory",
            "--no-watch",
            *flags,
        ]
        self.model = model
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ServedModel:
        from serving.query import wait_until_ready

        log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            _candidates("serve", "--model", self.model, *self._flags),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()  # the child holds its own descriptor
        try:
            wait_until_ready(self.url, self.process, READY_TIMEOUT_S, log_path=self.log_path)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def run_replay(
    events: str | os.PathLike,
    articles: str | os.PathLike,
    workdir: str | os.PathLike,
    searches: str | os.PathLike | None = None,
    mode: str = window.TIME,
    cut: str | None = None,
    window_days: float = 1.0,
    parameters: Mapping[str, str] | None = None,
    ks: Sequence[int] = (50, 200),
    label: str = "data",
    results: str | os.PathLike | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Runs steps 1-5 of the module docstring into `workdir`; the record appended to `results`.

    Raises:
      FileNotFoundError / ValueError: bad input tables or cut. RuntimeError: the pipeline failed or
      published nothing; the service did not start. drive.ReplayError: the service refused a write.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    held = window.hold_out(events, articles, workdir / "input", searches, mode, cut, window_days)
    run = run_pipeline(held, workdir / "publish", dict(parameters or {}))
    evaluation = read_evaluation(run)
    known_users = set(pd.read_parquet(held.events_path, columns=["user_id"])["user_id"].astype(str))
    with ServedModel(Path(run["workdir"]), workdir / "service.log") as service:
        answers = drive.replay(service.url, held.timeline(), known_users, k=max(ks))
    served = score.served_recall(answers.rank_array(), answers.users, ks, seed=seed)
    rows = score.report(served, evaluation, ks)
    record = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "label": label,
        "hold_out": {k: v for k, v in asdict(held).items() if not k.endswith("_path")},
        "model_version": run.get("version"),
        "evaluation": {
            "protocol": evaluation.get("protocol"),
            "split": evaluation.get("split"),
            "num_users": evaluation.get("num_users"),
            "as_of": evaluation.get("as_of"),
        },
        "served": {
            **served,
            "fallback_answers": int(sum(answers.fallback)),
            "cold_users": answers.cold_users,
            "cold_user_hits": int(answers.cold_hits),
            "rejected_views": answers.rejected_views,
            "requests": answers.requests,
            "replay_seconds": round(answers.seconds, 1),
        },
        "comparison": rows,
        "parameters": {**REPLAY_PARAMETERS, **dict(parameters or {})},
        "seconds": round(time.monotonic() - started, 1),
        "loadavg": _loadavg(),
    }
    print(score.table(label, rows))
    print(
        f"  {served['views']} answered views by {served['users']} users ({answers.cold_users} first views of new "
        f"users apart, {answers.rejected_views} views refused); evaluation: protocol {evaluation.get('protocol')}, "
        f"{evaluation.get('num_users')} users; load average {record['loadavg']}"
    )
    if results is not None:
        path = Path(results)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as out:
            out.write(json.dumps(record, default=str) + "\n")
    return record


def _loadavg() -> str | None:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return None
