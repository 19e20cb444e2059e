"""The service on a real, tiny trained model: sample data -> extract -> transform -> train ->
build-index -> publish root -> `candidates serve` (subprocess) -> `candidates query`, then a new
version picked up by SIGHUP.

Every stage runs through the real `candidates` command in its own process, as a user runs it.
The served answers are checked against an independent computation: the model's user vector
(`UserEncoder`, the one way to call the SavedModel) against every article vector with numpy.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from serving.store import read_histories
from tests.support.commands import candidates_command
from tests.support.service import Service

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(1200)]  # five stages, each its own process

VERSION = "tiny"


def candidates(*argv, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(candidates_command(*argv), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"candidates {argv[0]} failed:\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(model dir with index/, extract dir) of a model trained on a small simulated feed."""
    root = tmp_path_factory.mktemp("trained")
    candidates("sample-data", "--out", root / "input", "--users", "150", "--articles", "300", "--days", "14")
    candidates(
        "extract",
        "--events",
        root / "input" / "events.parquet",
        "--articles",
        root / "input" / "articles.parquet",
        "--out",
        root / "extract",
    )
    candidates("transform", "--examples", root / "extract", "--out", root / "transform")
    candidates(
        "train", "--transformed", root / "transform", "--out", root / "models", "--version", VERSION, "--epochs", "2"
    )
    model = root / "models" / VERSION
    histories = root / "extract" / "user_histories.parquet"
    out = candidates("build-index", "--model", model, "--histories", histories).stdout
    assert "index written to" in out and f"model {VERSION}" in out
    return model, root / "extract"


def expected_ids(model: Path, row: dict, k: int) -> list[str]:
    from trainer.towers.serving_model import UserEncoder

    user = UserEncoder(model).encode([row])[0]
    vectors = np.load(model / "article_vectors.npy")
    ids = (model / "article_ids.txt").read_text().split()
    order = np.argsort(-(vectors @ user), kind="stable")
    return [ids[i] for i in order if ids[i] not in set(row["history"])][:k]


def new_version(model: Path, target: Path, version: str, histories: Path) -> None:
    """The same weights under another version name, re-indexed, with its history snapshot: what a
    retrain publishes."""
    shutil.copytree(model, target)
    shutil.copy2(histories, target / "user_histories.parquet")
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["model_version"] = version
    (target / "manifest.json").write_text(json.dumps(manifest))
    candidates("build-index", "--model", target)


def test_real_model_served_queried_and_reloaded(trained, tmp_path):
    model, extract = trained
    root = tmp_path / "publish"
    (root / "versions").mkdir(parents=True)
    shutil.copytree(model, root / "versions" / VERSION)
    shutil.copy2(extract / "user_histories.parquet", root / "versions" / VERSION / "user_histories.parquet")
    (root / "LATEST").write_text(f"{VERSION}\n")

    service = Service(root, tmp_path / "serve.log", "--no-watch")
    url = service.url
    try:
        ready = service.wait_ready()
        assert ready["model_version"] == VERSION and ready["titles"] is True

        users = [(u, row) for u, row in read_histories(extract / "user_histories.parquet") if len(row["history"]) >= 3]
        for user_id, row in users[:3]:
            table = candidates("query", user_id, "--url", url, "--k", "10").stdout.splitlines()
            assert table[0] == f"user {user_id}  model {VERSION}  personalised  10 candidates"
            served = [line.split()[1] for line in table[2:]]
            assert served == expected_ids(model, row, 10)
            assert all(len(line.split()) > 3 for line in table[2:])  # every row has a title

        body = json.loads(candidates("query", "someone-new", "--url", url, "--k", "5", "--json").stdout)
        popular = json.loads((model / "popular_articles.json").read_text())["articles"]
        assert body["fallback"] is True and body["fallback_reason"] == "unknown_user"
        assert [c["article_id"] for c in body["candidates"]] == [p["article_id"] for p in popular[:5]]

        new_version(model, root / "versions" / "tiny-2", "tiny-2", extract / "user_histories.parquet")
        (root / "LATEST").write_text("tiny-2\n")
        service.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 120
        while service.wait_ready()["model_version"] != "tiny-2":
            assert time.monotonic() < deadline, "SIGHUP did not load the new version"
            time.sleep(0.2)
        user_id = users[0][0]
        body = json.loads(candidates("query", user_id, "--url", url, "--k", "10", "--json").stdout)
        assert body["model_version"] == "tiny-2" and body["fallback"] is False
    finally:
        returncode = service.stop()  # SIGTERM
    output = service.log()
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert returncode in (0, -signal.SIGTERM), output[-3000:]
    assert "Application shutdown complete" in output
    assert "reload (SIGHUP): now serving model tiny-2 (was tiny)" in output
