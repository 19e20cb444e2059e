"""Submitting the compiled pipeline to a Kubeflow Pipelines cluster: one run, or a schedule.

Everything goes through `kfp.Client`: the pipeline spec travels inline with the run (no separate
pipeline upload), in an experiment that is created if it does not exist yet.
"""

import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "homefeed-candidates"


@dataclass
class SubmitRequest:
    """What to submit and where.

    Attributes:
      host: the KFP API endpoint, e.g. `http://localhost:8080` (a port-forward of ml-pipeline-ui)
        or `https://<id>.pipelines.googleusercontent.com`.
      namespace: the Kubeflow profile namespace (multi-user clusters); None for single-user.
      experiment: experiment name; created when missing.
      schedule: a cron expression; None submits one run now. Five fields (`min hour dom mon dow`)
        are accepted and given a leading seconds field, since KFP's scheduler takes six.
      parameters: pipeline parameter values (typed, see `compile.parse_param_assignments`).
      output_root: the run's pipeline root (`gs://bucket/path`); None uses the compiled default.
      run_name: display name; default `<pipeline name> <timestamp>`.
      package: a compiled pipeline YAML to submit; None compiles the current pipeline first.
      token: a bearer token for the KFP API, when the cluster needs one.
      enable_caching: override the compiled caching settings for every task (None keeps them).
      max_concurrency: for schedules, how many runs may overlap (1: none).
    """

    host: str
    namespace: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    schedule: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    output_root: str | None = None
    run_name: str | None = None
    package: str | None = None
    token: str | None = None
    enable_caching: bool | None = None
    max_concurrency: int = 1


@dataclass(frozen=True)
class SubmitResult:
    """What the cluster created: a run or a recurring run, with its id."""

    kind: str  # "run" | "recurring_run"
    id: str
    experiment_id: str
    name: str
    url: str | None = None


def normalise_cron(expression: str) -> str:
    """A six-field cron expression for KFP's scheduler (seconds first).

    Raises:
      ValueError: the expression has neither 5 nor 6 fields.
    """
    fields = expression.split()
    if len(fields) == 5:
        return " ".join(["0", *fields])
    if len(fields) == 6:
        return " ".join(fields)
    raise ValueError(
        f"--schedule {expression!r}: expected a cron expression of 5 fields (min hour day month weekday, "
        f"e.g. '0 3 * * *' for 03:00 daily) or 6 (with seconds first); got {len(fields)}"
    )


def _client(request: SubmitRequest):
    import warnings

    import kfp

    with warnings.catch_warnings():
        # kfp.Client warns on every construction that it needs KFP >= 2.0.0-beta.2; that is all we support.
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(
            host=request.host,
            namespace=request.namespace or "kubeflow",
            existing_token=request.token,
        )


def submit(request: SubmitRequest) -> SubmitResult:
    """Creates a run (or, with `schedule`, a recurring run) of the pipeline on a KFP cluster.

    Raises:
      ValueError: a bad schedule or parameter (checked before anything is sent).
      kfp_server_api.ApiException: the cluster refused the request.
    """
    from pipeline import compile as compiling

    cron = normalise_cron(request.schedule) if request.schedule else None
    with tempfile.TemporaryDirectory(prefix="homefeed-submit-") as tmp:
        package = request.package
        if package is None:
            package = os.path.join(tmp, "pipeline.yaml")
            compiling.compile_pipeline(package)
        elif not Path(package).is_file():
            raise FileNotFoundError(f"--package {package}: no such file")
        spec = compiling.load_pipeline(package).pipeline_spec
        known = set(spec.root.input_definitions.parameters)
        unknown = sorted(set(request.parameters) - known)
        if unknown:
            raise ValueError(f"unknown pipeline parameter(s) {unknown}; the pipeline has: {sorted(known)}")
        _check_publish_root(spec, request.parameters)
        pipeline_name = spec.pipeline_info.name
        run_name = request.run_name or f"{pipeline_name} {_now()}"

        client = _client(request)
        experiment = client.create_experiment(name=request.experiment, namespace=request.namespace)
        if cron is None:
            result = client.create_run_from_pipeline_package(
                pipeline_file=package,
                arguments=dict(request.parameters),
                run_name=run_name,
                experiment_id=experiment.experiment_id,
                pipeline_root=request.output_root,
                enable_caching=request.enable_caching,
            )
            run_id = result.run_id
            LOG.info("created run %s in experiment %s", run_id, request.experiment)
            return SubmitResult("run", run_id, experiment.experiment_id, run_name, _link(request.host, "runs", run_id))
        recurring = client.create_recurring_run(
            experiment_id=experiment.experiment_id,
            job_name=run_name if request.run_name else f"{pipeline_name} ({cron})",
            description=f"{pipeline_name} on schedule {cron}",
            cron_expression=cron,
            max_concurrency=request.max_concurrency,
            no_catchup=True,  # a missed night is not worth several back-to-back retrainings
            params=dict(request.parameters),
            pipeline_package_path=package,
            pipeline_root=request.output_root,
            enable_caching=request.enable_caching,
        )
        LOG.info("created recurring run %s (%s) in experiment %s", recurring.recurring_run_id, cron, request.experiment)
        return SubmitResult(
            "recurring_run",
            recurring.recurring_run_id,
            experiment.experiment_id,
            recurring.display_name or run_name,
            _link(request.host, "recurringrun/details", recurring.recurring_run_id),
        )


def _check_publish_root(spec, parameters: Mapping[str, Any]) -> None:
    """A run without a publish location would train for nothing and fail at its last step."""
    definition = spec.root.input_definitions.parameters.get("publish_root")
    if definition is None:
        return
    value = parameters.get("publish_root", definition.default_value.string_value)
    if not str(value or "").strip():
        raise ValueError(
            "set --param publish_root=PATH: where the gated publish writes versions/ and LATEST "
            "(a path every task can reach, e.g. a mounted volume or a gcsfuse mount such as /gcs/<bucket>/models)"
        )


def _now() -> str:
    import datetime

    return datetime.datetime.now().strftime("%Y-%m-%d %H-%M-%S")


def _link(host: str, kind: str, identifier: str) -> str:
    if kind == "runs":
        return f"{host.rstrip('/')}/#/runs/details/{identifier}"
    return f"{host.rstrip('/')}/#/{kind}/{identifier}"


def parameters_from_assignments(assignments: list[str], package: str | None = None) -> dict[str, Any]:
    """Types `k=v` strings against the pipeline's parameters (from `package`, or the current code)."""
    import yaml

    from pipeline import compile as compiling

    if not assignments:
        return {}
    if package is not None:
        spec = yaml.safe_load(Path(package).read_text())
    else:
        from google.protobuf import json_format

        from pipeline.pipeline import candidates_pipeline

        spec = json_format.MessageToDict(candidates_pipeline.pipeline_spec)
    return compiling.parse_param_assignments(assignments, compiling.pipeline_parameters(spec))


def describe(result: SubmitResult, request: SubmitRequest) -> Mapping[str, Any]:
    """A JSON-friendly summary of a submission, for the CLI."""
    return {
        "kind": result.kind,
        "id": result.id,
        "name": result.name,
        "experiment": request.experiment,
        "experiment_id": result.experiment_id,
        "schedule": normalise_cron(request.schedule) if request.schedule else None,
        "parameters": request.parameters,
        "url": result.url,
    }
