"""`candidates pipeline compile | submit | run-local`: the stages as one Kubeflow pipeline."""

from __future__ import annotations

import argparse
import json
import sys

PIPELINE_HELP = """\
The six stages as one Kubeflow Pipelines (v2) pipeline:
  extract (BigQuery SQL) -> transform (Beam + TFT) -> train -> evaluate + build-index -> publish

Publishing is gated: the new model + index go live (PUBLISH_ROOT/LATEST moves) only if recall@200
on the test split clears --param min_recall_at_200 and is at most --param max_regression below the
published model's; otherwise the run ends green with "not published" and the reason in its metrics.

  compile     write the pipeline as KFP IR YAML (for the KFP UI, `kfp` CLI or Vertex AI Pipelines)
  submit      create a run, or a recurring run (--schedule), on a Kubeflow Pipelines cluster
  run-local   run the same pipeline on this machine through kfp.local and publish into a directory
"""

PARAM_HELP = (
    "set a pipeline parameter (repeatable), e.g. --param epochs=5 --param beam_runner=DataflowRunner "
    "--param 'beam_args=[\"--region=europe-west1\"]'. Lists are JSON. `candidates pipeline compile` "
    "lists every parameter with its default at the top of the YAML."
)

SUBMIT_EPILOG = """\
examples:
  # one run now, on a port-forwarded cluster (kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80)
  candidates pipeline submit --host http://localhost:8080 \\
      --param image=REGISTRY/homefeed-candidates:0.1.0 --param bq_project=my-project \\
      --param publish_root=/models/homefeed --output-root gs://my-bucket/pipeline-root

  # every night at 03:00 (five-field cron; KFP's six-field form with seconds works too)
  candidates pipeline submit --host http://localhost:8080 --schedule '0 3 * * *' --experiment nightly ...
"""

RUN_LOCAL_EPILOG = """\
The run uses this machine only: the event and article files are loaded into an embedded BigQuery
emulator on loopback, the transform runs on Beam's DirectRunner, every component runs as a local
subprocess of this Python (kfp.local; with --image, in a container of that image, as on a cluster).
Artifacts go to DIR/pipeline_runs/, the published model to DIR/versions/<version>/ with DIR/LATEST
naming it; serve it with `candidates serve --model DIR`.

example:
  candidates sample-data --out data
  candidates pipeline run-local --events data/events.parquet --articles data/articles.parquet \\
      --workdir runs/local --param epochs=5
  candidates pipeline run-local --events data/events.parquet --articles data/articles.parquet \\
      --searches data/searches.parquet --workdir runs/local-searches
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pipeline",
        help="the stages as one Kubeflow pipeline: compile, submit, run-local",
        description=PIPELINE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="pipeline_command", metavar="SUBCOMMAND")
    parser.set_defaults(handler=lambda args: (parser.print_help(), 1)[1])

    compile_parser = commands.add_parser(
        "compile",
        help="write the pipeline as KFP IR YAML",
        description="Compile the pipeline to KFP IR YAML. The file loads back with "
        "kfp.components.load_component_from_file and runs on any KFP v2 backend.",
    )
    compile_parser.add_argument(
        "--output", "-o", default="pipeline.yaml", help="YAML file to write (default: %(default)s)"
    )
    compile_parser.add_argument(
        "--output-root",
        help="default pipeline root for the run's artifacts (gs://bucket/path or a path the cluster mounts); "
        "submit --output-root overrides it per run",
    )
    compile_parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="change a parameter's default; " + PARAM_HELP
    )
    compile_parser.set_defaults(handler=_compile)

    submit_parser = commands.add_parser(
        "submit",
        help="create a run or a recurring run on a Kubeflow Pipelines cluster",
        description="Submit the pipeline to a Kubeflow Pipelines cluster through kfp.Client: one run now, "
        "or a recurring run with --schedule. The experiment is created if it does not exist.",
        epilog=SUBMIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    submit_parser.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    submit_parser.add_argument("--namespace", help="Kubeflow profile namespace (multi-user clusters)")
    submit_parser.add_argument(
        "--experiment", default="homefeed-candidates", help="experiment name (default: %(default)s)"
    )
    submit_parser.add_argument(
        "--schedule", metavar="CRON", help="create a recurring run on this cron schedule, e.g. '0 3 * * *'"
    )
    submit_parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help=PARAM_HELP)
    submit_parser.add_argument(
        "--output-root", help="pipeline root for this run's artifacts, e.g. gs://bucket/pipeline-root"
    )
    submit_parser.add_argument("--run-name", help="display name of the run (default: pipeline name and time)")
    submit_parser.add_argument(
        "--package", help="submit this compiled YAML instead of compiling the installed pipeline"
    )
    submit_parser.add_argument("--token", help="bearer token for the KFP API, when the cluster needs one")
    caching = submit_parser.add_mutually_exclusive_group()
    caching.add_argument(
        "--cache", dest="enable_caching", action="store_true", default=None, help="let every task reuse cached results"
    )
    caching.add_argument("--no-cache", dest="enable_caching", action="store_false", help="run every task afresh")
    submit_parser.set_defaults(handler=_submit)

    local_parser = commands.add_parser(
        "run-local",
        help="run the pipeline on this machine (kfp.local) and publish into a directory",
        description="Run the same pipeline on this machine through kfp.local and publish into --workdir.",
        epilog=RUN_LOCAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    local_parser.add_argument(
        "--events", required=True, help="events table as Parquet or CSV (user_id, article_id, viewed_at)"
    )
    local_parser.add_argument(
        "--articles", required=True, help="articles table as Parquet or CSV (article_id, optional title, category, ...)"
    )
    local_parser.add_argument(
        "--searches",
        help="optional searches table as Parquet or CSV (user_id, query, searched_at): the second user signal",
    )
    local_parser.add_argument("--workdir", required=True, help="publish root and home of the run's artifacts (created)")
    local_parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help=PARAM_HELP)
    local_parser.add_argument(
        "--image",
        metavar="IMAGE",
        help="run every task in a container of this pipeline image (kfp.local DockerRunner; needs a Docker "
        "daemon and the image, e.g. from `make image`) instead of in this Python",
    )
    local_parser.add_argument(
        "--show-task-output",
        action="store_true",
        help="echo every task's full output (it always goes to DIR/run-local.log)",
    )
    local_parser.add_argument("--json", action="store_true", help="print the result as JSON after the summary")
    local_parser.set_defaults(handler=_run_local)


def _typed_params(assignments: list[str], package: str | None = None) -> dict:
    from pipeline.submit import parameters_from_assignments

    return parameters_from_assignments(assignments, package)


def _compile(args: argparse.Namespace) -> int:
    from pipeline.compile import compile_pipeline, pipeline_parameters

    parameters = _typed_params(args.param)
    spec = compile_pipeline(args.output, parameters, pipeline_root=args.output_root)
    count = len(pipeline_parameters(spec))
    tasks = list(spec["root"]["dag"]["tasks"])
    print(f"wrote {args.output}: pipeline {spec['pipelineInfo']['name']!r}, {len(tasks)} tasks, {count} parameters")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from pipeline.submit import SubmitRequest, describe, submit

    request = SubmitRequest(
        host=args.host,
        namespace=args.namespace,
        experiment=args.experiment,
        schedule=args.schedule,
        parameters=_typed_params(args.param, args.package),
        output_root=args.output_root,
        run_name=args.run_name,
        package=args.package,
        token=args.token,
        enable_caching=args.enable_caching,
    )
    try:
        result = submit(request)
    except Exception as error:  # kfp_server_api.ApiException, connection errors: one clear line
        if type(error).__name__ not in ("ApiException", "MaxRetryError", "NewConnectionError", "ProtocolError"):
            raise
        from homefeed.errors import CommandError

        detail = getattr(error, "body", None) or getattr(error, "reason", None) or error
        raise CommandError(f"the KFP API at {args.host} refused the request: {str(detail).strip()[:500]}") from error
    what = "recurring run" if result.kind == "recurring_run" else "run"
    print(f"created {what} {result.id} ({result.name}) in experiment {args.experiment!r}")
    if result.url:
        print(f"  {result.url}")
    print(json.dumps(describe(result, request), indent=2, default=str))
    return 0


def _run_local(args: argparse.Namespace) -> int:
    from pipeline.run_local import run_local

    parameters = _typed_params(args.param)
    print(f"Running the pipeline locally (kfp.local); full log in {args.workdir}/run-local.log", flush=True)
    try:
        result = run_local(
            args.events,
            args.articles,
            args.workdir,
            parameters,
            verbose=args.show_task_output,
            searches=args.searches,
            image=args.image,
        )
    except RuntimeError as error:  # a task failed; its output is in the log
        from homefeed.errors import CommandError

        raise CommandError(str(error)) from error
    print()
    print("\n".join(result.summary_lines()))
    if args.json:
        print(
            json.dumps(
                {k: str(v) if hasattr(v, "__fspath__") else v for k, v in vars(result).items()}, indent=2, default=str
            )
        )
    sys.stdout.flush()
    return 0
