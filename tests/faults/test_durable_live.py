"""Without Redis, live writes survive `kill -9`: every acknowledged view, upsert and removal is
there after a restart (the SQLite live store, serving/live/durable.py)."""

from __future__ import annotations

import json
import signal

VIEW_BATCHES, VIEWS_PER_BATCH, NEW_LISTINGS, SOLD = 80, 10, 150, 50  # 800 + 150 + 50 = 1,000 writes


def _views(batch: int) -> bytes:
    events = [
        {
            "user_id": f"d{batch:03d}",
            "article_id": f"a{(batch * 7 + i) % 300:06d}",
            "viewed_at": f"2024-07-01T00:{i:02d}:00Z",
            "event_id": f"e{batch}-{i}",
        }
        for i in range(VIEWS_PER_BATCH)
    ]
    return json.dumps({"events": events}).encode()


def test_a_thousand_acknowledged_writes_survive_kill_9(model_dirs, start_service, tmp_path):
    store = tmp_path / "live.sqlite3"
    json_headers = {"Content-Type": "application/json"}
    first = start_service(model_dirs["v1"], "--live-store", store)
    acknowledged = 0
    for batch in range(VIEW_BATCHES):
        status, body = first.post("/v1/events", data=_views(batch), headers=json_headers)
        assert status == 200 and body["applied"] == VIEWS_PER_BATCH, body
        acknowledged += body["applied"]
    for i in range(NEW_LISTINGS):
        payload = json.dumps({"title": f"new {i}", "region": "north"}).encode()
        status, _, _ = first.request("PUT", f"/v1/articles/n-{i}", headers=json_headers, data=payload)
        assert status == 200
        acknowledged += 1
    for i in range(SOLD):
        payload = json.dumps({"status": "sold"}).encode()
        status, _, _ = first.request("PUT", f"/v1/articles/a{i:06d}", headers=json_headers, data=payload)
        assert status == 200
        acknowledged += 1
    assert acknowledged == 1000
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=30)

    second = start_service(model_dirs["v1"], "--live-store", store)
    for batch in range(VIEW_BATCHES):  # every view is there: posting it again stores nothing
        status, body = second.post("/v1/events", data=_views(batch), headers=json_headers)
        assert status == 200 and body["applied"] == 0 and body["duplicates"] == VIEWS_PER_BATCH, (batch, body)
    for i in range(NEW_LISTINGS):
        status, body = second.get(f"/v1/articles/n-{i}")
        assert status == 200 and body["source"] == "live" and body["title"] == f"new {i}", body
    for i in range(SOLD):
        status, body = second.get(f"/v1/articles/a{i:06d}")
        assert status == 200 and body["status"] == "sold", body
    status, answer = second.get("/v1/users/u0001/candidates?k=300")
    assert status == 200
    returned = {c["article_id"] for c in answer["candidates"]}
    assert not returned & {f"a{i:06d}" for i in range(SOLD)}, "removals survive the restart"
