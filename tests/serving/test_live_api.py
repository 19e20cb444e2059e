"""The live feed over real HTTP: views, new / sold listings, region filter, bad bodies, auth.

Every expected answer is recomputed with numpy from the hashing model's table (model_factory),
never read back from the service.
"""

from __future__ import annotations

import numpy as np
import pytest
from live_http import ids_of, ids_of_body, reference, running_service, snapshot_history, user_vector, view

from serving.http.settings import ServiceSettings
from tests.support import model_factory


@pytest.fixture(scope="module")
def model(make_model):
    return make_model("live1")


@pytest.fixture(scope="module")
def service(model):
    with running_service(ServiceSettings(model=model, history_length=4)) as client:
        yield client


@pytest.fixture(scope="module")
def table(saved_models):
    return saved_models[0][1]


def test_a_posted_view_changes_the_next_answer_and_is_excluded(service, model, table):
    history = snapshot_history(model, "u0001")[:3]
    before = ids_of(service.get("/v1/users/u0001/candidates", params={"k": 20}))
    new = before[0]  # viewing the top candidate must drop it and move the user
    answer = service.post("/v1/events", json={"events": [view("u0001", new, type="view")]})
    assert answer.status_code == 200 and answer.json() == {"accepted": 1, "applied": 1, "duplicates": 0, "rejected": []}
    after = ids_of(service.get("/v1/users/u0001/candidates", params={"k": 20}))
    assert new not in after and after != before
    assert after == reference(model, table, [new, *history], 20)  # H=4: the new view + 3 newest


def test_duplicates_are_stored_once_and_late_events_land_in_time_order(service, model, table):
    snapshot = snapshot_history(model, "u0002")
    a, b, c, d = [x for x in model_factory.article_ids(400)[100:120] if x not in snapshot][:4]
    first = service.post(
        "/v1/events",
        json={"events": [view("u0002", a, "2024-07-01T10:00:00Z"), view("u0002", c, "2024-07-01T12:00:00+00:00")]},
    )
    assert first.json()["applied"] == 2
    # b is older than c but arrives later; a arrives twice; d is the oldest of all.
    late = service.post(
        "/v1/events",
        json={
            "events": [
                view("u0002", b, "2024-07-01T13:00:00+02:00"),
                view("u0002", a, "2024-07-01T10:00:00Z"),
                view("u0002", d, "2024-06-15T00:00:00Z"),
                view("u0002", b, "2024-07-01T11:00:00Z"),
            ]
        },
    )
    assert late.json() == {"accepted": 4, "applied": 2, "duplicates": 2, "rejected": []}
    # H=4, newest first by event time: c (12:00), b (11:00), a (10:00), d (June 15).
    got = ids_of(service.get("/v1/users/u0002/candidates", params={"k": 15}))
    assert got == reference(model, table, [c, b, a, d], 15)


def test_a_user_unknown_to_the_snapshot_is_personalised_by_live_views(service, model, table):
    assert service.get("/v1/users/newcomer/candidates").json()["fallback"] is True
    service.post("/v1/events", json={"events": [view("newcomer", "a000010", "2020-01-01T00:00:00Z")]})
    body = service.get("/v1/users/newcomer/candidates", params={"k": 10}).json()
    assert body["fallback"] is False and ids_of_body(body) == reference(model, table, ["a000010"], 10)


def test_region_filter_equals_a_brute_force_reference(service, model, table):
    for user in ("u0003", "u0004", "u0005"):
        history = snapshot_history(model, user)[:4]
        for regions in (["north"], ["south"], ["north", "south"]):
            got = ids_of(service.get(f"/v1/users/{user}/candidates", params={"k": 50, "region": regions}))
            assert got == reference(model, table, history, 50, regions), (user, regions)
    # a region nobody lists: nothing, and no personalised answer pretends otherwise
    assert ids_of(service.get("/v1/users/u0003/candidates", params={"region": "atlantis"})) == []
    fallback = service.get("/v1/users/nobody/candidates", params={"k": 30, "region": "south"}).json()
    assert fallback["fallback"] and fallback["candidates"]
    assert all(int(a[1:]) % 2 == 1 for a in ids_of_body(fallback))  # south = odd rows


def test_a_new_listing_appears_for_a_matching_user(service, model, table):
    history = snapshot_history(model, "u0006")[:4]
    user = user_vector(table, history)
    names = [f"new-{i}" for i in range(3000)]
    best = names[int(np.argmax(model_factory.article_vectors_for(names, table) @ user))]
    put = service.put(f"/v1/articles/{best}", json={"title": "Fresh bike", "category": "bikes", "region": "north"})
    assert put.status_code == 200 and put.json()["result"] == "created"
    got = service.get("/v1/users/u0006/candidates", params={"k": 30, "region": "north"}).json()["candidates"]
    assert [c["article_id"] for c in got] == reference(model, table, history, 30, ["north"], extra={best: "north"})
    assert got[0]["article_id"] == best and got[0]["title"] == "Fresh bike"
    assert best not in ids_of(service.get("/v1/users/u0006/candidates", params={"region": "south"}))


def test_a_sold_listing_never_appears_again_fallback_included(service, model):
    popular = ids_of(service.get("/v1/users/nobody/candidates", params={"k": 5}))
    sold, deleted = popular[0], popular[1]
    assert service.put(f"/v1/articles/{sold}", json={"status": "sold"}).json()["result"] == "removed"
    assert service.delete(f"/v1/articles/{deleted}").status_code == 200
    for user in ["nobody", *(f"u{i:04d}" for i in range(40))]:
        for params in ({"k": 400}, {"k": 400, "region": ["north", "south"]}):
            got = ids_of(service.get(f"/v1/users/{user}/candidates", params=params))
            assert sold not in got and deleted not in got, (user, params)
    assert service.get(f"/v1/articles/{sold}").json()["status"] == "sold"


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (view("u0001", "a000001", "2024-13-01T00:00:00Z"), "RFC 3339"),
        (view("u0001", "a000001", "2024-07-01T00:00:00"), "time zone"),
        (view("u0001", "no-such-article"), "unknown article"),
        (view("u0001", "a000001", 1719835200), "RFC 3339"),
        (view(["u0001"], "a000001"), "user_id"),
        (view("u0001", 7), "article_id"),
        ({**view("u0001", "a000001"), "type": "click"}, "unknown event type"),
        ({**view("u0001", "a000001"), "type": "search"}, "unknown field"),
        ("not an object", "JSON object"),
    ],
)
def test_bad_items_get_422_with_per_item_reasons(service, item, reason):
    response = service.post("/v1/events", json={"events": [item]})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["accepted"] == 0 and body["rejected"][0]["index"] == 0 and reason in body["rejected"][0]["reason"]
    assert body["error"]["details"] == body["rejected"]


def test_valid_items_of_a_mixed_batch_are_applied(service):
    events = [view("u0007", "a000011"), view("u0007", "bogus"), view("u0007", "a000013", "yesterday")]
    body = service.post("/v1/events", json={"events": events}).json()
    assert body["accepted"] == 1 and [r["index"] for r in body["rejected"]] == [1, 2]


def test_bad_bodies_get_4xx_json(service):
    too_many = {
        "events": [view("u0001", "a000001", f"2024-07-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z") for i in range(1001)]
    }
    cases = [
        (too_many, 413, "limit is 1000"),
        ({"events": "a000001"}, 422, "must be"),
        ({"views": []}, 422, "must be"),
        ([1, 2], 422, "must be"),
    ]
    for body, status, message in cases:
        response = service.post("/v1/events", json=body)
        assert response.status_code == status and message in response.json()["error"]["message"], response.text
    huge = service.post(
        "/v1/events",
        content=b'{"events": ["' + b"x" * (2 * 1024 * 1024) + b'"]}',
        headers={"content-type": "application/json"},
    )
    assert huge.status_code == 413 and huge.json()["error"]["status"] == 413
    broken = service.post("/v1/events", content=b'{"events": [', headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "JSON" in broken.json()["error"]["message"]
    bad_article = service.put("/v1/articles/x1", json={"status": "gone", "region": 5})
    assert bad_article.status_code == 422
    assert {d["where"] for d in bad_article.json()["error"]["details"]} == {"body.status", "body.region"}
    assert service.delete("/v1/articles/never-existed").status_code == 404


def test_writes_need_the_token_when_one_is_configured(model):
    with running_service(ServiceSettings(model=model, write_token="s3cret-token")) as client:
        event = {"events": [view("u0001", "a000001")]}
        missing = client.post("/v1/events", json=event)
        assert missing.status_code == 401 and missing.json()["error"]["status"] == 401
        wrong = client.put("/v1/articles/a000001", json={"status": "sold"}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403 and "s3cret" not in wrong.text
        assert client.post("/admin/reload").status_code == 401
        good = client.post("/v1/events", json=event, headers={"Authorization": "Bearer s3cret-token"})
        assert good.status_code == 200 and good.json()["accepted"] == 1
        assert client.get("/v1/users/u0001/candidates").status_code == 200  # reads stay open


def test_live_writes_are_counted(service):
    service.post(
        "/v1/events", json={"events": [view("u0009", "a000031"), view("u0009", "a000031"), view("u0009", "nope")]}
    )
    text = service.get("/metrics").text
    for line in (
        'candidates_live_events_total{result="applied"}',
        'candidates_live_events_total{result="duplicate"}',
        'candidates_live_events_total{result="rejected"}',
        'candidates_live_article_changes_total{status="sold"}',
    ):
        assert line in text, line


@pytest.mark.slow
def test_sync_articles_sends_a_file_of_listings(service, model, tmp_path):
    import subprocess
    import sys

    import pandas as pd

    frame = pd.DataFrame(
        {
            "article_id": ["sync-old", "sync-new", "a000008", "sync-bad"],
            "region": ["north", "north", None, "south"],
            "status": ["active", "active", "sold", "bogus"],
            "created_at": pd.to_datetime(["2024-01-01", "2024-08-01", "2024-08-02", "2024-08-03"], utc=True),
        }
    )
    frame.to_parquet(tmp_path / "articles.parquet")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "homefeed_cli",
            "sync-articles",
            "--service",
            str(service.base_url),
            "--articles",
            str(tmp_path / "articles.parquet"),
            "--since",
            "2024-07-01",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr  # one row rejected
    assert "2 of 3 listings accepted" in result.stdout and "row 2" in result.stderr and "status" in result.stderr
    assert service.get("/v1/articles/sync-new").json()["region"] == "north"
    assert service.get("/v1/articles/a000008").json()["status"] == "sold"
    assert service.get("/v1/articles/sync-old").status_code == 404  # before --since
    got = ids_of(service.get("/v1/users/u0010/candidates", params={"k": 400}))
    assert "sync-new" in got and "a000008" not in got


def test_the_live_endpoints_are_documented(service):
    paths = service.get("/openapi.json").json()["paths"]
    events = paths["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert events["properties"]["events"]["maxItems"] == 1000
    assert {"put", "delete", "get"} <= set(paths["/v1/articles/{article_id}"])
    assert "region" in {p["name"] for p in paths["/v1/users/{user_id}/candidates"]["get"]["parameters"]}


def test_sync_articles_reports_a_refusing_or_missing_service_in_one_line(model, tmp_path):
    import subprocess
    import sys

    import pandas as pd

    from tests.support.ports import free_port

    pd.DataFrame({"article_id": ["s-1"], "region": ["north"]}).to_parquet(tmp_path / "articles.parquet")
    command = [sys.executable, "-m", "homefeed_cli", "sync-articles", "--articles", str(tmp_path / "articles.parquet")]
    with running_service(ServiceSettings(model=model, write_token="right-token")) as guarded:
        refused = subprocess.run(
            [*command, "--service", str(guarded.base_url), "--write-token", "wrong-token"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    missing = subprocess.run(
        [*command, "--service", f"http://127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=120
    )
    for result, says in ((refused, "403"), (missing, "cannot reach")):
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert "sync-articles: error:" in result.stderr and says in result.stderr and "wrong-token" not in result.stderr


def test_article_ids_with_control_characters_or_undecodable_bytes_are_refused(service):
    # %ff is not UTF-8: decoded it becomes U+FFFD, so %ff and %fe would name the same listing;
    # NUL and other control characters are no one's listing id. 422, never stored.
    for raw in ("%ff", "%fe", "%00", "a%0Ab", "x%7F", "ab%0A"):  # a final newline too (a `$`-only regex let it by)
        answer = service.put(f"/v1/articles/{raw}", json={"region": "north"})
        assert answer.status_code == 422 and answer.json()["error"]["message"], (raw, answer.text)
        assert service.delete(f"/v1/articles/{raw}").status_code == 422
    bulk = service.post("/v1/articles", json={"articles": [{"article_id": "ok\u0000"}, {"article_id": "\ufffd"}]})
    assert bulk.status_code == 422 and len(bulk.json()["rejected"]) == 2
    events = service.post("/v1/events", json={"events": [view("u0001", "a\u0000"), view("u0001", "\x1b[31m")]})
    assert events.status_code == 422 and all("article_id" in r["reason"] for r in events.json()["rejected"])
    newline = service.post("/v1/events", json={"events": [view("u0001\n", "a000001"), view("u0001", "a000001\n")]})
    assert newline.status_code == 422 and [r["reason"].split()[0] for r in newline.json()["rejected"]] == [
        "user_id",
        "article_id",
    ]
