"""Experiments (serving/experiments): the experiment file, the user assignment, arms served over real
HTTP, the exposure log's Parquet files."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pyarrow as pa
import pytest
import yaml

from serving.experiments.assign import Assigner, bucket
from serving.experiments.config import ExperimentError, load_experiment
from serving.experiments.exposures import SCHEMA, Exposure, ExposureLog, read_exposures
from serving.http.settings import ServiceSettings
from tests.support.commands import candidates_command
from tests.support.service import running_app

TOKEN = "experiment-write-token-0123"


def write_experiment(path, arms, **extra):
    body = {"name": "exp1", "salt": "s1", "arms": arms, **extra}
    path.write_text(json.dumps(body) if path.suffix == ".json" else yaml.safe_dump(body))
    return path


# --- the file --------------------------------------------------------------------------------
def test_a_yaml_file_loads_with_paths_from_its_folder(tmp_path):
    (tmp_path / "models").mkdir()
    path = write_experiment(
        tmp_path / "e.yaml",
        [{"name": "control", "model": "popularity", "share": 0.25}, {"name": "m", "model": "models/v2", "share": 0.75}],
        exposure_dir="exposures",
    )
    config = load_experiment(path)
    assert config.shares == {"control": 0.25, "m": 0.75}
    assert config.arm("m").model == str(tmp_path / "models" / "v2")
    assert config.arm("control").is_popularity and config.exposure_dir == tmp_path / "exposures"


@pytest.mark.parametrize(
    "arms, where, problem",
    [
        ([{"name": "a", "model": "popularity", "share": 0.5}], "arms", "add up to 1, they add up to 0.5"),
        ([{"name": "a", "model": "popularity", "share": 1.5}], "arms[0].share (arm 'a')", "less than or equal to 1"),
        ([{"name": "a", "model": "popularity", "share": 1, "weight": 2}], "arms[0].weight (arm 'a')", "not permitted"),
        ([{"name": "a b", "model": "popularity", "share": 1}], "arms[0].name (arm 'a b')", "should match"),
        (
            [{"name": "a", "model": "popularity", "share": 0.5}, {"name": "a", "model": "x", "share": 0.5}],
            "arms",
            "repeated: a",
        ),
        ([], "arms", "at least 1 item"),
    ],
)
def test_a_bad_file_names_the_file_and_the_field(tmp_path, arms, where, problem):
    path = write_experiment(tmp_path / "e.json", arms)
    with pytest.raises(ExperimentError) as error:
        load_experiment(path)
    assert str(path) in str(error.value) and f"{where}: " in str(error.value) and problem in str(error.value)


def test_not_yaml_and_missing_file_are_clear(tmp_path):
    (tmp_path / "e.yaml").write_text("arms: [unclosed\n")
    with pytest.raises(ExperimentError, match="not valid YAML"):
        load_experiment(tmp_path / "e.yaml")
    with pytest.raises(ExperimentError, match="cannot read the experiment file"):
        load_experiment(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ExperimentError, match="expected a mapping"):
        load_experiment(tmp_path / "list.yaml")


def test_serve_refuses_a_bad_experiment_before_loading(tmp_path, model_v1):
    path = write_experiment(tmp_path / "e.yaml", [{"name": "a", "model": "popularity", "share": 0.4}])
    result = subprocess.run(
        candidates_command("serve", "--model", model_v1, "--experiment", path, "--port", "1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "e.yaml: arms: arm shares must add up to 1" in result.stderr


# --- assignment ------------------------------------------------------------------------------
def test_assignment_follows_the_shares_and_the_salt():
    assigner = Assigner("salt", ["a", "b", "c"], [0.5, 0.3, 0.2])
    counts = Counter(assigner.arm_of(f"user-{i}") for i in range(60_000))
    for name, share in zip(["a", "b", "c"], [0.5, 0.3, 0.2]):
        assert abs(counts[name] / 60_000 - share) < 0.01, counts
    other = Assigner("another salt", ["a", "b", "c"], [0.5, 0.3, 0.2])
    moved = sum(assigner.arm_of(f"user-{i}") != other.arm_of(f"user-{i}") for i in range(2_000))
    assert moved > 600  # a new salt reshuffles users (independent draws would move 62 %)


def test_assignment_is_the_same_in_another_process():
    """No per-process state (Python's hash is salted per process; the assignment must not be)."""
    users = [f"u{i}" for i in range(300)]
    here = [Assigner("s", ["a", "b"], [0.5, 0.5]).arm_of(u) for u in users]
    code = (
        "import json,sys; from serving.experiments.assign import Assigner; "
        "a=Assigner('s',['a','b'],[0.5,0.5]); print(json.dumps([a.arm_of(u) for u in json.loads(sys.argv[1])]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(users)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        cwd=str(__import__("pathlib").Path(__file__).parents[2]),
    )
    assert json.loads(result.stdout) == here
    assert 0 <= bucket("s", "u1") < 1 and bucket("s", "u1") == bucket("s", "u1")


# --- the exposure log ------------------------------------------------------------------------
def _exposure(i: int, ids=("a1", "a2")) -> Exposure:
    return Exposure(f"r{i}", f"u{i}", "m", False, 0.5, "v1", False, 1_700_000_000.0 + i, lambda: list(ids))


def test_the_log_rolls_files_and_keeps_every_row(tmp_path):
    log = ExposureLog(tmp_path, "exp1", rows_per_file=3, roll_interval_s=60)
    for i in range(7):
        assert log.record(_exposure(i))
    log.close()
    files = sorted(tmp_path.glob("exposures-*.parquet"))
    assert len(files) == 3 and log.written == 7 and log.dropped == 0  # 3 + 3 + the last at close
    table = read_exposures(tmp_path)
    assert table.schema == SCHEMA and table.num_rows == 7
    rows = table.to_pylist()
    assert sorted(r["request_id"] for r in rows) == [f"r{i}" for i in range(7)]
    assert rows[0]["candidates"] == [{"rank": 1, "article_id": "a1"}, {"rank": 2, "article_id": "a2"}]
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path):
    import threading

    gate, taken = threading.Event(), threading.Event()
    log = ExposureLog(tmp_path, "exp1", max_queue=2, rows_per_file=1)

    def slow():
        taken.set()
        gate.wait(30)
        return ["a1"]

    log.record(Exposure("r", "u", "m", False, 1.0, "v1", False, 0.0, slow))  # the thread waits in it
    assert taken.wait(30)
    accepted = [log.record(_exposure(i)) for i in range(5)]
    assert accepted == [True, True, False, False, False] and log.dropped == 3
    gate.set()
    log.close()
    assert read_exposures(tmp_path).num_rows == 3


def test_the_log_rolls_by_time(tmp_path):
    import time

    log = ExposureLog(tmp_path, "exp1", rows_per_file=1000, roll_interval_s=0.2)
    log.record(_exposure(1))
    deadline = time.monotonic() + 10
    while not list(tmp_path.glob("exposures-*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert read_exposures(tmp_path).num_rows == 1
    log.close()


def test_reading_names_a_broken_file(tmp_path):
    (tmp_path / "exposures-x.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="exposures-x.parquet"):
        read_exposures(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_exposures(tmp_path / "none")


# --- over HTTP -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_v2(make_model):
    return make_model("v2", seed=1)


def test_arms_over_http(tmp_path, model_v1, model_v2):
    exposures = tmp_path / "exposures"
    path = write_experiment(
        tmp_path / "e.yaml",
        [
            {"name": "control", "model": "popularity", "share": 0.5},
            {"name": "new", "model": str(model_v2), "share": 0.3},
            {"name": "same", "model": str(model_v2), "share": 0.2},  # one load for two arms
        ],
        exposure_dir=str(exposures),
        exposure_top_n=5,
    )
    assigner = Assigner("s1", ["control", "new", "same"], [0.5, 0.3, 0.2])
    settings = ServiceSettings(model=model_v1, experiment=path, write_token=TOKEN, reload_min_interval_s=0)
    users = [f"u{i:04d}" for i in range(30)]
    answers = {}
    with running_app(settings) as client:
        ready = client.get("/readyz").json()
        assert [a["model_version"] for a in ready["experiment"]["arms"]] == ["popularity", "v2", "v2"]
        for user in users:
            body = client.get(f"/v1/users/{user}/candidates?k=10", headers={"X-Request-ID": f"req-{user}"}).json()
            assert body["arm"] == assigner.arm_of(user), body
            assert body["model_version"] == ("v1" if body["arm"] == "control" else "v2")
            if body["arm"] == "control":
                assert body["fallback"] and body["fallback_reason"] in ("popularity_arm", "empty_history")
            answers[user] = body
        again = client.get(f"/v1/users/{users[0]}/candidates?k=10").json()
        assert again["arm"] == answers[users[0]]["arm"]  # stable across requests
        # A reload of --model keeps every user's arm.
        assert client.post("/admin/reload?force=true", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert all(client.get(f"/v1/users/{u}/candidates?k=3").json()["arm"] == answers[u]["arm"] for u in users[:10])
        # ?arm= needs the write token, and names a real arm.
        assert client.get(f"/v1/users/{users[0]}/candidates?arm=new").status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (
            client.get(f"/v1/users/{users[0]}/candidates?arm=new", headers={"Authorization": "Bearer x"}).status_code
            == 403
        )
        forced = client.get(f"/v1/users/{users[0]}/candidates?arm=new&k=4", headers=auth).json()
        assert forced["arm"] == "new" and forced["model_version"] == "v2"
        missing = client.get(f"/v1/users/{users[0]}/candidates?arm=nope", headers=auth)
        assert missing.status_code == 422 and "control, new, same" in missing.json()["error"]["message"]
        metrics = client.get("/metrics").text
    table = read_exposures(exposures).to_pylist()  # the log was closed with the service
    assert len(table) == len(users) + 1 + 10 + 1
    by_request = {r["request_id"]: r for r in table}
    for user in users:
        row = by_request[f"req-{user}"]
        body = answers[user]
        assert row["user_id"] == user and row["arm"] == body["arm"] and row["model_version"] == body["model_version"]
        assert [c["article_id"] for c in row["candidates"]] == [c["article_id"] for c in body["candidates"][:5]]
        assert [c["rank"] for c in row["candidates"]] == list(range(1, len(row["candidates"]) + 1))
        assert not row["overridden"] and row["experiment"] == "exp1"
    assert sum(r["overridden"] for r in table) == 1
    assert "candidates_exposures_dropped_total 0.0" in metrics


def test_arm_is_refused_without_an_experiment(model_v1):
    with running_app(ServiceSettings(model=model_v1)) as client:
        answer = client.get("/v1/users/u0001/candidates?arm=a")
        assert answer.status_code == 422 and "--experiment" in answer.json()["error"]["message"]
        assert "arm" not in client.get("/v1/users/u0001/candidates").json()


def test_shares_of_users_are_schema_columns():
    assert {"share", "arm", "model_version", "served_at", "candidates"} <= set(SCHEMA.names)
    assert SCHEMA.field("candidates").type == pa.list_(pa.struct([("rank", pa.int32()), ("article_id", pa.string())]))


@pytest.mark.slow
def test_two_workers_with_redis_log_every_answer_once(tmp_path, model_v1, model_v2, redis_url):
    """gunicorn workers each load the arms and write their own files; the popularity arm reads its
    history store (Redis) off the event loop; SIGTERM writes what is queued."""
    import urllib.request

    from tests.support.service import Service

    exposures = tmp_path / "exposures"
    path = write_experiment(
        tmp_path / "e.yaml",
        [
            {"name": "control", "model": "popularity", "share": 0.5},
            {"name": "new", "model": str(model_v2), "share": 0.5},
        ],
        exposure_dir=str(exposures),
    )
    service = Service(
        model_v1, tmp_path / "serve.log", "--workers", "2", "--experiment", path, env={"REDIS_URL": redis_url}
    )
    try:
        service.wait_ready()
        assigner = Assigner("s1", ["control", "new"], [0.5, 0.5])
        for i in range(40):
            request = urllib.request.Request(
                f"{service.url}/v1/users/w{i}/candidates?k=5", headers={"Connection": "close"}
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                body = json.loads(response.read())
            assert body["arm"] == assigner.arm_of(f"w{i}")
    finally:
        assert service.stop() == 0, service.log()[-3000:]
    table = read_exposures(exposures)
    assert table.num_rows == 40 and len(set(table["user_id"].to_pylist())) == 40
