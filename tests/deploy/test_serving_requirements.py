"""requirements-serving.txt: what the serving image installs, checked against the lock and the code.

* every pin equals requirements.lock's (TensorFlow's CPU build at the lock's TensorFlow release);
* the serving command path (the whole CLI parser, `serve`'s app with a real SavedModel and
  FAISS index answering a request, `query`, the stores; the model built by the serving tests'
  factory) imports nothing from Beam, kfp, BigQuery, TFT or the emulator, so
  an image without them serves. The serving image test (tests/docker) runs the real thing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9._-]+)(\[[^\]]*\])?==([^\s;#]+)", re.M)
# Top-level modules the service must never need (the pipeline's stack).
FORBIDDEN = (
    "apache_beam",
    "kfp",
    "google.cloud.bigquery",
    "google.cloud.bigquery_storage",
    "tensorflow_transform",
    "tfx_bsl",
    "bqemulator",
    "duckdb",
)


def pins(path: Path) -> dict[str, str]:
    return {m.group(1).lower().replace("_", "-"): m.group(3) for m in PIN.finditer(path.read_text())}


def test_serving_pins_agree_with_the_lock():
    lock, serving = pins(ROOT / "requirements.lock"), pins(ROOT / "requirements-serving.txt")
    assert serving.pop("tensorflow-cpu") == lock["tensorflow"]
    differ = {name: (version, lock.get(name)) for name, version in serving.items() if lock.get(name) != version}
    assert not differ, f"requirements-serving.txt disagrees with requirements.lock (serving, lock): {differ}"
    assert not {"apache-beam", "kfp", "google-cloud-bigquery", "tensorflow-transform", "tfx-bsl"} & set(serving)


def test_pin_parser_reads_the_lock():
    """The check above can fail: it reads real pins, extras and all."""
    lock = pins(ROOT / "requirements.lock")
    assert lock["tensorflow"] and lock["kfp"] == "2.17.0" and lock["uvicorn"]


PROBE = r"""
import json, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from tests.support import model_factory
from homefeed_cli import cli
from homefeed.config import IndexConfig
from components.build_index.build import build_model_index

root = Path({tmp!r})
table = model_factory.save_hashing_model(root / "saved_model", 8, 0)
model_factory.make_model_dir(root / "v1", root / "saved_model", table, version="v1", seed=0)
build_model_index(root / "v1", IndexConfig())
cli.build_parser()
from fastapi.testclient import TestClient
from serving.http.app import create_app
from serving.http.settings import ServiceSettings
import serving.cli, serving.query, serving.store
with TestClient(create_app(ServiceSettings(model=root / "v1"))) as client:
    statuses = [client.get("/readyz").status_code, client.get("/v1/users/u1/candidates?k=5").status_code]
print(json.dumps({{"statuses": statuses, "modules": sorted(sys.modules)}}))
"""


@pytest.mark.slow
def test_the_serving_path_imports_none_of_the_pipeline_stack(tmp_path):
    code = PROBE.format(root=str(ROOT), tmp=str(tmp_path))
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads(process.stdout.strip().splitlines()[-1])
    assert result["statuses"] == [200, 200]
    offenders = [name for name in result["modules"] if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)]
    assert not offenders, f"the serving path imported {offenders[:10]}"
    assert "tensorflow" in result["modules"] and "faiss" in result["modules"]  # the probe did serve
