"""Running the very pipeline a cluster runs, on this machine, through `kfp.local`.

Each component runs as a subprocess of this Python (`SubprocessRunner(use_venv=False)`: the
project is installed here, nothing is pip-installed per task). Extract loads the event and article
files into an embedded BigQuery emulator on loopback; transform runs Beam's DirectRunner; the
artifacts land under `WORKDIR/pipeline_runs/`; the gated publish writes `WORKDIR/versions/<v>/`
and `WORKDIR/LATEST`, so `candidates serve --model WORKDIR` serves the result.

The task subprocesses die with this process, whatever kills it (`homefeed.lifetime`: a watchdog
for SIGKILL, an orderly stop for SIGTERM), and kfp.local's scratch workspace lives in
`WORKDIR/.kfp-workspace-<owner>`, so a later run removes the ones killed runs left behind.
"""

import contextlib
import io
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

LOG = logging.getLogger(__name__)

PIPELINE_RUNS_DIR = "pipeline_runs"
WORKSPACE_PREFIX = ".kfp-workspace-"
LOG_FILE = "run-local.log"
# Task names in the compiled pipeline, in the order they run.
STAGES = ("extract", "transform", "train", "evaluate", "transform-2", "train-final", "build-index", "publish")


@dataclass
class LocalRunResult:
    """Where a local run put everything, and what the gate decided.

    Attributes:
      workdir: the publish root (`candidates serve --model <workdir>`).
      run_dir: this run's artifacts (`<workdir>/pipeline_runs/<pipeline>-<timestamp>/<task>/...`).
      model_dir: the model published (or refused): trained on every view up to as_of (train-final).
      held_out_model_dir: the model trained on the train split, whose test figures these are (train).
      index_dir, evaluation_dir: the artifacts of build-index and evaluate.
      published, version, reason: the gate's decision.
      recall_at_200: the held-out model's recall@200 on the test split; metrics: all its evaluation metrics.
      stage_seconds: wall time of each stage's work, as each component measured it.
      seconds: wall time of the whole run, including KFP's own overhead.
      log_file: the full log of the run (every task's output).
    """

    workdir: Path
    run_dir: Path
    model_dir: Path
    index_dir: Path
    evaluation_dir: Path
    published: bool
    version: str
    reason: str
    recall_at_200: float
    held_out_model_dir: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    log_file: Path | None = None

    @property
    def published_dir(self) -> Path | None:
        return self.workdir / "versions" / self.version if self.published else None

    def summary_lines(self) -> list[str]:
        """What a person needs after a run: where things are, how good, what next."""
        lines = [f"Pipeline finished in {self.seconds:.0f}s."]
        if self.stage_seconds:
            lines.append("  time per stage: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.stage_seconds.items()))
        lines += [
            f"  model:       {self.model_dir}",
            f"  index:       {self.index_dir}",
            f"  metrics:     {self.evaluation_dir / 'evaluation.json'}",
        ]
        if self.held_out_model_dir is not None:
            lines.append(
                f"  held out:    {self.held_out_model_dir} (train split only): the figures below are its, on the "
                "test split; the model above is trained on every view up to as_of"
            )
        ks = sorted(int(k.split("@")[1]) for k in self.metrics if k.startswith("recall@"))
        for k in ks:
            popular = self.metrics.get(f"popularity_recall@{k}")
            versus = f" (popularity {popular:.4f})" if isinstance(popular, float) else ""
            lines.append(f"               recall@{k:<4} {self.metrics[f'recall@{k}']:.4f}{versus}")
        if self.published:
            lines += [
                f"  published:   version {self.version} -> {self.published_dir} (LATEST updated)",
                f"               {self.reason}",
                f"Serve it:      candidates serve --model {self.workdir}",
            ]
        else:
            lines += [f"  published:   no - {self.reason}"]
            if (self.workdir / "LATEST").exists():
                lines.append(f"The previous version is still live: candidates serve --model {self.workdir}")
        if self.log_file:
            lines.append(f"  full log:    {self.log_file}")
        return lines


class _ProgressStream(io.TextIOBase):
    """Writes everything to the log file and echoes only progress lines to the console.

    Echoed: KFP's task start/finish lines and the components' own log lines (tagged `[homefeed]`).
    The whole output stays in the log file; when a task fails, its last lines are shown too.
    """

    _ECHO = ("Executing task", "finished with status", "Running pipeline", "[homefeed]")
    _SKIP = ("Wrote executor output file",)

    def __init__(self, log: TextIO, console: TextIO, echo_all: bool) -> None:
        self._log, self._console, self._echo_all = log, console, echo_all
        self._pending = ""
        self.tail: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._log.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        self.tail = (self.tail + lines)[-40:]
        for line in lines:
            if self._echo_all or (
                any(marker in line for marker in self._ECHO) and not any(skip in line for skip in self._SKIP)
            ):
                self._console.write(line.strip() if not self._echo_all else line)
                self._console.write("\n")
        self._console.flush()
        return len(text)

    def flush(self) -> None:
        self._log.flush()
        self._console.flush()


def _plain(text: str) -> str:
    """KFP colours task names with ANSI escapes; error messages should not carry them."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _task_outputs(run_dir: Path, task: str) -> dict[str, Any]:
    """The executor output a task wrote (parameters and artifact metadata), {} if none."""
    path = run_dir / task / "executor_output.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def stage_seconds(run_dir: Path) -> dict[str, float]:
    """`seconds` each component recorded in its metrics artifact, by stage."""
    result: dict[str, float] = {}
    for task in STAGES:
        for artifacts in _task_outputs(run_dir, task).get("artifacts", {}).values():
            for artifact in artifacts.get("artifacts", []):
                seconds = (artifact.get("metadata") or {}).get("seconds")
                if isinstance(seconds, (int, float)):
                    result[task] = float(seconds)
    return result


def run_local(
    events: str | os.PathLike,
    articles: str | os.PathLike,
    workdir: str | os.PathLike,
    parameters: Mapping[str, Any] | None = None,
    *,
    verbose: bool = False,
    console: TextIO | None = None,
    image: str | None = None,
    searches: str | os.PathLike | None = None,
) -> LocalRunResult:
    """Runs the whole pipeline locally and publishes into `workdir`.

    Args:
      events, articles: the input tables as Parquet or CSV files.
      searches: the optional searches table (user_id, query, searched_at) as Parquet or CSV.
      workdir: the publish root (created); artifacts go to `workdir/pipeline_runs/`.
      parameters: pipeline parameters to override (e.g. `{"epochs": 3}`); see `candidates pipeline
        compile` output or pipeline/pipeline.py for the list.
      verbose: echo every task's full output instead of progress lines only.
      console: where progress goes (default: sys.stdout).
      image: run every task in a container of this pipeline image (kfp.local's DockerRunner, see
        pipeline/docker_local.py) instead of as a subprocess of this Python.

    Returns:
      A `LocalRunResult`. A model that fails the gate is a normal result (`published=False`).

    Raises:
      FileNotFoundError: an input file is missing.
      ValueError: an unknown pipeline parameter.
      RuntimeError: a task failed (the message names it; the log file has its output).
    """
    from kfp import local

    from homefeed import lifetime
    from pipeline.pipeline import candidates_pipeline

    console = console or sys.stdout
    for name, path in (("events", events), ("articles", articles), ("searches", searches)):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"--{name} {path}: no such file")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    pipeline_root = workdir / PIPELINE_RUNS_DIR
    parameters = dict(parameters or {})
    known = set(candidates_pipeline.component_spec.inputs or {})
    reserved = {"local_events", "local_articles", "local_searches", "publish_root"}
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ValueError(f"unknown pipeline parameter(s) {unknown}; known: {sorted(known - reserved)}")
    clash = sorted(set(parameters) & reserved)
    if clash:
        raise ValueError(f"{clash} are set by run-local from --events/--articles/--searches/--workdir")
    arguments = {
        **parameters,
        "local_events": str(Path(events).resolve()),
        "local_articles": str(Path(articles).resolve()),
        "local_searches": str(Path(searches).resolve()) if searches is not None else "",
        "publish_root": str(workdir),
    }

    log_path = workdir / LOG_FILE
    started = time.monotonic()
    lifetime.remove_stale_dirs(workdir, WORKSPACE_PREFIX)  # left by runs that were killed
    workspace = lifetime.owned_dir(workdir, WORKSPACE_PREFIX)  # kfp.local removes it when the run ends
    pipeline_fn, runner = candidates_pipeline, local.SubprocessRunner(use_venv=False)
    if image is not None:
        from pipeline import docker_local

        pipeline_fn = docker_local.pipeline_with_image(image)
        arguments["image"] = image
        inputs = {Path(p).resolve().parent for p in (events, articles, searches) if p is not None}
        runner = docker_local.docker_runner(writable=[workdir], readable=inputs)
    local.init(
        runner,
        pipeline_root=str(pipeline_root),
        workspace_root=str(workspace),
        raise_on_error=True,
        enable_caching=False,
    )
    with (
        lifetime.children_die_with_me("candidates pipeline run-local"),
        open(log_path, "w") as log,
        warnings.catch_warnings(),
    ):
        # kfp.local warns that the image is not a Python image: it runs in this Python anyway.
        warnings.filterwarnings("ignore", message="You may be attemping to run a task", category=RuntimeWarning)
        # ... and that display names and caching options mean nothing locally: they are for clusters.
        warnings.filterwarnings("ignore", message=r"Task .* have no effect in the current local runner")
        stream = _ProgressStream(log, console, verbose)
        try:
            with contextlib.redirect_stdout(stream):
                task = pipeline_fn(**arguments)
        except RuntimeError as error:
            stream.flush()
            if not verbose:
                console.write("".join(f"  | {line}\n" for line in stream.tail if line.strip()))
            raise RuntimeError(f"{_plain(str(error))} Full log: {log_path}") from None
        stream.flush()

    outputs = task.outputs
    model_dir = Path(outputs["model"].path)
    run_dir = model_dir.parent.parent
    evaluation_dir = Path(outputs["evaluation"].path)
    metrics = dict(outputs["metrics"].metadata)
    metrics.pop("seconds", None)
    return LocalRunResult(
        workdir=workdir,
        run_dir=run_dir,
        model_dir=model_dir,
        index_dir=Path(outputs["index"].path),
        evaluation_dir=evaluation_dir,
        published=bool(outputs["published"]),
        version=str(outputs["version"]),
        reason=str(outputs["reason"]),
        recall_at_200=float(outputs["recall_at_200"]),
        held_out_model_dir=Path(outputs["held_out_model"].path),
        metrics=metrics,
        stage_seconds=stage_seconds(run_dir),
        seconds=time.monotonic() - started,
        log_file=log_path,
    )
