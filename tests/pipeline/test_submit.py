"""`candidates pipeline submit` against a loopback HTTP server that records what kfp.Client sends.

The server speaks just enough of the KFP v2beta1 REST API (healthz, experiments, runs, recurring
runs) for kfp.Client to complete; the assertions are on the request bodies it received.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from homefeed_cli import cli
from pipeline import compile as compiling
from pipeline.submit import SubmitRequest, normalise_cron, submit

STAGES = {"extract", "transform", "train", "evaluate", "transform-2", "train-final", "build-index", "publish"}


class RecordingKfp:
    """A loopback HTTP server that records requests and answers like the KFP API would."""

    def __init__(self, experiments: list[dict] | None = None, fail_runs: bool = False) -> None:
        self.requests: list[dict] = []
        self.experiments = list(experiments or [])
        self.fail_runs = fail_runs
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self) -> dict:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                entry = {
                    "method": self.command,
                    "path": url.path,
                    "query": parse_qs(url.query),
                    "body": json.loads(raw) if raw else None,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                }
                recorder.requests.append(entry)
                return entry

            def do_GET(self):
                entry = self._record()
                if entry["path"] == "/apis/v2beta1/healthz":
                    return self._reply(200, {"multi_user": False})
                if entry["path"] == "/apis/v2beta1/experiments":
                    wanted = json.loads(entry["query"]["filter"][0])["predicates"][0]["stringValue"]
                    found = [e for e in recorder.experiments if e["display_name"] == wanted]
                    return self._reply(200, {"experiments": found, "total_size": len(found)} if found else {})
                return self._reply(404, {"error": f"no route {entry['path']}"})

            def do_POST(self):
                entry = self._record()
                body = entry["body"] or {}
                if entry["path"] == "/apis/v2beta1/experiments":
                    experiment = {**body, "experiment_id": f"exp-{len(recorder.experiments) + 1}"}
                    recorder.experiments.append(experiment)
                    return self._reply(200, experiment)
                if entry["path"] == "/apis/v2beta1/runs":
                    if recorder.fail_runs:
                        return self._reply(400, {"error": "Invalid input error: bad pipeline spec", "code": 3})
                    return self._reply(200, {**body, "run_id": "run-42", "state": "PENDING"})
                if entry["path"] == "/apis/v2beta1/recurringruns":
                    return self._reply(200, {**body, "recurring_run_id": "rr-7", "status": "ENABLED"})
                return self._reply(404, {"error": f"no route {entry['path']}"})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingKfp:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def posts(self, path: str) -> list[dict]:
        return [r["body"] for r in self.requests if r["method"] == "POST" and r["path"] == path]


@pytest.fixture(autouse=True)
def no_user_kfp_context(tmp_path, monkeypatch):
    # kfp.Client reads (and may write) ~/.config/kfp/context.json; keep the test away from the user's.
    import kfp.client.client as kfp_client

    monkeypatch.setattr(kfp_client.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> str:
    # Compiled with a publish root, as a team would for its cluster (submit refuses a run without one).
    path = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    compiling.compile_pipeline(path, {"publish_root": "/models/homefeed"})
    return str(path)


def test_run_request_carries_spec_parameters_root_and_experiment(package):
    with RecordingKfp() as server:
        result = submit(
            SubmitRequest(
                host=server.url,
                experiment="nightly-candidates",
                parameters={
                    "epochs": 3,
                    "learning_rate": 0.01,
                    "beam_args": ["--region=europe-west1"],
                    "image": "reg/hf:1",
                },
                output_root="gs://bucket/pipeline-root",
                run_name="try-1",
                package=package,
            )
        )

    assert result.kind == "run" and result.id == "run-42" and result.experiment_id == "exp-1"
    [experiment] = server.posts("/apis/v2beta1/experiments")
    assert experiment["display_name"] == "nightly-candidates"
    [run] = server.posts("/apis/v2beta1/runs")
    assert run["display_name"] == "try-1"
    assert run["experiment_id"] == "exp-1"
    spec = run["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "homefeed-candidates"
    assert set(spec["root"]["dag"]["tasks"]) == STAGES
    assert run["runtime_config"] == {
        "pipeline_root": "gs://bucket/pipeline-root",
        "parameters": {"epochs": 3, "learning_rate": 0.01, "beam_args": ["--region=europe-west1"], "image": "reg/hf:1"},
    }
    assert not server.posts("/apis/v2beta1/recurringruns")


def test_schedule_creates_a_recurring_run_with_six_field_cron(package):
    with RecordingKfp() as server:
        result = submit(SubmitRequest(host=server.url, schedule="0 3 * * *", parameters={"epochs": 5}, package=package))

    assert result.kind == "recurring_run" and result.id == "rr-7"
    assert not server.posts("/apis/v2beta1/runs")
    [job] = server.posts("/apis/v2beta1/recurringruns")
    assert job["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert job["mode"] == "ENABLE"
    assert job["no_catchup"] is True
    assert int(job["max_concurrency"]) == 1
    assert job["experiment_id"] == "exp-1"
    assert job["runtime_config"]["parameters"] == {"epochs": 5}
    assert set(job["pipeline_spec"]["root"]["dag"]["tasks"]) == STAGES


def test_existing_experiment_is_reused_and_namespace_is_sent(package):
    existing = {"experiment_id": "exp-old", "display_name": "homefeed-candidates", "namespace": "team-recs"}
    with RecordingKfp(experiments=[existing]) as server:
        result = submit(SubmitRequest(host=server.url, namespace="team-recs", package=package))

    assert result.experiment_id == "exp-old"
    assert not server.posts("/apis/v2beta1/experiments")
    lookups = [r for r in server.requests if r["method"] == "GET" and r["path"] == "/apis/v2beta1/experiments"]
    assert lookups and lookups[0]["query"]["namespace"] == ["team-recs"]
    [run] = server.posts("/apis/v2beta1/runs")
    assert run["experiment_id"] == "exp-old"


def test_token_is_sent_as_bearer(package):
    with RecordingKfp() as server:
        submit(SubmitRequest(host=server.url, token="s3cret", package=package))
    [run_request] = [r for r in server.requests if r["path"] == "/apis/v2beta1/runs"]
    assert run_request["headers"].get("authorization") == "Bearer s3cret"


def test_cli_submit_types_params_and_prints_the_run(package, capsys):
    with RecordingKfp() as server:
        status = cli.main(
            [
                "pipeline",
                "submit",
                "--host",
                server.url,
                "--package",
                package,
                "--param",
                "epochs=2",
                "--param",
                "min_recall_at_200=0.2",
                "--param",
                'beam_args=["--x=1"]',
                "--param",
                "bq_project=my-proj",
                "--experiment",
                "cli-test",
            ]
        )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "created run run-42" in out
    [run] = server.posts("/apis/v2beta1/runs")
    assert run["runtime_config"]["parameters"] == {
        "epochs": 2,
        "min_recall_at_200": 0.2,
        "beam_args": ["--x=1"],
        "bq_project": "my-proj",
    }


@pytest.mark.parametrize(
    "param, message",
    [
        ("epochz=3", "no parameter 'epochz'"),
        ("epochs=three", "epochs is NUMBER_INTEGER"),
        ("beam_args=--x", "beam_args is LIST"),
        ("epochs", "expected NAME=VALUE"),
    ],
)
def test_bad_params_are_refused_before_anything_is_sent(package, capsys, param, message):
    with RecordingKfp() as server:
        status = cli.main(["pipeline", "submit", "--host", server.url, "--package", package, "--param", param])
    assert status == 2
    assert message in capsys.readouterr().err
    assert server.requests == []


def test_bad_cron_is_refused(package):
    with RecordingKfp() as server:
        with pytest.raises(ValueError, match="expected a cron expression of 5 fields"):
            submit(SubmitRequest(host=server.url, schedule="every night", package=package))
    assert server.requests == []
    assert normalise_cron("*/15 * * * *") == "0 */15 * * * *"
    assert normalise_cron("30 0 3 * * 1-5") == "30 0 3 * * 1-5"


def test_server_refusal_is_one_clear_line(package, capsys):
    with RecordingKfp(fail_runs=True) as server:
        status = cli.main(["pipeline", "submit", "--host", server.url, "--package", package])
    err = capsys.readouterr().err
    assert status == 2
    assert "refused the request" in err and "bad pipeline spec" in err


def test_missing_package_is_a_clear_error(tmp_path, capsys):
    status = cli.main(["pipeline", "submit", "--host", "http://127.0.0.1:9", "--package", str(tmp_path / "nope.yaml")])
    assert status == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_run_without_a_publish_root_is_refused_before_anything_is_sent(tmp_path):
    bare = tmp_path / "bare.yaml"
    compiling.compile_pipeline(bare)
    with RecordingKfp() as server:
        with pytest.raises(ValueError, match="publish_root"):
            submit(SubmitRequest(host=server.url, package=str(bare)))
    assert server.requests == []


def test_submit_without_package_compiles_the_installed_pipeline(tmp_path):
    with RecordingKfp() as server:
        submit(SubmitRequest(host=server.url, parameters={"publish_root": "/models/x"}))
    [run] = server.posts("/apis/v2beta1/runs")
    assert set(run["pipeline_spec"]["root"]["dag"]["tasks"]) == STAGES
    assert Path(tmp_path).exists()
