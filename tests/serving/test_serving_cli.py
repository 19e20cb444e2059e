"""The serving commands through the real `candidates` entry point, including a live `serve`."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serve_process import free_port, publish_root, start_serve

from homefeed_cli import cli
from serving.query import format_candidates, wait_until_ready


@pytest.fixture(autouse=True)
def serving_commands_only(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("components.build_index.cli", "serving.cli"))


def test_build_index_command_reports_and_refuses(make_model, capsys):
    model = make_model("cli-build", index=False)
    assert cli.main(["build-index", "--model", str(model), "--index-type", "hnsw", "--sample-size", "20"]) == 0
    out = capsys.readouterr().out
    assert f"index written to {model}/index: hnsw over 400 articles, recall@200 1.0000" in out
    assert "user_histories, 20 queries" in out

    before = (model / "index" / "index_manifest.json").read_text()
    argv = [
        "build-index",
        "--model",
        str(model),
        "--index-type",
        "ivf",
        "--ivf-nlist",
        "8",
        "--nprobe",
        "1",
        "--no-tune",
        "--recall-floor",
        "0.99",
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "candidates build-index: error: ivf index recall@200 vs exact is" in err and "nothing was written" in err
    assert (model / "index" / "index_manifest.json").read_text() == before

    assert cli.main(["build-index", "--model", str(model / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.redis
def test_load_histories_command(model_v1, redis_url, capsys):
    argv = [
        "load-histories",
        "--histories",
        str(model_v1 / "user_histories.parquet"),
        "--redis-url",
        redis_url,
        "--prefix",
        "cli:",
        "--batch-size",
        "16",
    ]
    assert cli.main(argv) == 0
    assert "loaded 40 user histories into Redis (prefix 'cli:')" in capsys.readouterr().out
    import redis

    assert redis.Redis.from_url(redis_url).exists("cli:u0001") == 1


def test_query_command_explains_an_unreachable_service(capsys):
    assert cli.main(["query", "u0001", "--url", f"http://127.0.0.1:{free_port()}"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the candidate service" in err and "is `candidates serve` running there?" in err


def test_serve_refuses_a_model_it_could_not_load_before_binding(model_v1, make_model, tmp_path, capsys):
    assert cli.main(["serve", "--model", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    mixed = tmp_path / "mixed"
    shutil.copytree(model_v1, mixed)
    shutil.rmtree(mixed / "index")
    shutil.copytree(make_model("cli-other") / "index", mixed / "index")
    assert cli.main(["serve", "--model", str(mixed)]) == 2
    assert "was built for model 'cli-other', not 'v1'" in capsys.readouterr().err


def test_format_candidates_table():
    body = {
        "user_id": "u1",
        "model_version": "v7",
        "fallback": True,
        "fallback_reason": "unknown_user",
        "candidates": [{"article_id": "a1", "score": 0.5, "title": "Oak desk"}, {"article_id": "a22", "score": 0.25}],
    }
    assert format_candidates(body).splitlines() == [
        "user u1  model v7  fallback (unknown_user)  2 candidates",
        "rank  article      score  title",
        "   1  a1          0.5000  Oak desk",
        "   2  a22         0.2500",
    ]


@pytest.mark.slow
def test_serve_query_and_sighup_reload_end_to_end(model_v1, make_model, tmp_path, capsys):
    root = publish_root(model_v1, tmp_path / "publish")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_serve(root, port)
    try:
        assert wait_until_ready(url, process, timeout_s=90)["model_version"] == "v1"
        assert cli.main(["query", "u0001", "--url", url, "--k", "5"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == "user u0001  model v1  personalised  5 candidates"
        assert len(lines) == 7 and "Listing" in lines[2]
        assert cli.main(["query", "u0001", "--url", url, "--k", "5000"]) == 2
        assert "the service refused the request (422): k=5000 is above the maximum of 1000" in capsys.readouterr().err

        shutil.copytree(make_model("v2", seed=1), root / "versions" / "v2")
        (root / "LATEST").write_text("v2\n")
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while wait_until_ready(url, process, timeout_s=90)["model_version"] != "v2":
            assert time.monotonic() < deadline, "SIGHUP did not reload"
            time.sleep(0.2)
        assert cli.main(["query", "nobody", "--url", url, "--k", "3", "--json"]) == 0
        body = json.loads(capsys.readouterr().out)
        assert body["model_version"] == "v2" and body["fallback"] is True and len(body["candidates"]) == 3
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert "SIGHUP: reloading" in output and "now serving model v2" in output


def test_wait_until_ready_reports_a_service_that_died_with_its_log(tmp_path):
    from serving.query import ServiceError

    log = tmp_path / "service.log"
    log.write_text("error: [Errno 98] address already in use\n")
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    with pytest.raises(ServiceError, match=r"status 3(.|\n)*address already in use"):
        wait_until_ready("http://127.0.0.1:9", process, timeout_s=30, log_path=log)


def test_wait_until_ready_times_out_when_nothing_answers():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(TimeoutError, match="not ready within"):
            wait_until_ready(f"http://127.0.0.1:{port}", timeout_s=0.5, poll_s=0.05)


def serve_parser():
    import argparse

    from serving import cli as serving_cli

    parser = argparse.ArgumentParser()
    serving_cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_serve_flags_take_their_defaults_and_help_from_the_service_settings(monkeypatch, capsys):
    from serving import cli as serving_cli
    from serving.http.settings import ServiceSettings

    parser = serve_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    flags = serving_cli.serve_flags()
    assert set(flags) == set(ServiceSettings.model_fields)  # every setting is a flag, every flag a setting
    for field, flag in flags.items():
        info = ServiceSettings.model_fields[field]
        assert flag in text
        if info.default is not None and info.repr is not False:
            assert f"[{info.default}]" in text, flag  # the default shown is the settings' own

    # Not given: the CANDIDATES_* variable, then the default; given: the flag wins.
    monkeypatch.setenv("CANDIDATES_MAX_K", "77")
    settings = serving_cli.settings_from_args(parser.parse_args(["serve", "--model", "m"]))
    assert settings.max_k == 77 and settings.default_k == ServiceSettings().default_k and settings.watch_latest
    settings = serving_cli.settings_from_args(
        parser.parse_args(
            ["serve", "--model", "m", "--max-k", "500", "--max-batch", "1", "--no-watch", "--workers", "2"]
        )
    )
    assert (settings.max_k, settings.max_batch, settings.watch_latest, settings.workers) == (500, 1, False, 2)
    assert settings.model == Path("m").absolute()


def test_serve_flags_out_of_range_name_the_flag():
    from serving import cli as serving_cli

    args = serve_parser().parse_args(["serve", "--model", "m", "--workers", "0", "--max-k", "2"])
    with pytest.raises(ValueError, match=r"--workers 0: .*greater than or equal to 1"):
        serving_cli.settings_from_args(args)
