"""The walking skeleton end to end: upload -> probe -> clips -> scores -> events -> explanations -> review."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from tests.server.conftest import admin, upload, wait_for_tasks


def _overlaps(event: dict, truth: dict) -> bool:
    return event["start"] < truth["end"] and truth["start"] < event["end"]


def test_upload_scores_and_explains(client: TestClient, ward_video) -> None:  # type: ignore[no-untyped-def]
    response = upload(client, ward_video.video, room="room-7", patient_ref="p-001",
                      started_at="2026-03-01T08:00:00Z")
    assert response.status_code == 201, response.text
    recording = response.json()
    assert recording["status"] == "queued"
    assert recording["width"] == 320 and recording["height"] == 240
    assert abs(recording["duration"] - 36) < 0.5
    assert len(recording["sha256"]) == 64

    wait_for_tasks(client)
    recording = client.get(f"/api/v1/recordings/{recording['id']}").json()
    assert recording["status"] == "scored", recording["error"]
    assert recording["clip_count"] >= 15

    events = client.get("/api/v1/events", params={"recording": recording["id"]}).json()
    assert events["count"] >= 1
    truths = json.loads(Path(ward_video.annotations_json).read_text())["events"]
    labels = {t["label"] for t in truths}
    matched = [e for e in events["data"] if any(e["label"] == t["label"] and _overlaps(e, t) for t in truths)]
    assert matched, f"no detected event matches the ground truth {labels}: {events['data']}"

    event = matched[0]
    assert event["status"] == "flagged"
    assert event["start_wall"].startswith("2026-03-01T08:")
    assert 0.5 <= event["peak_score"] <= 1.0
    assert -1.0 <= event["agreement"] <= 1.0

    explanations = client.get(f"/api/v1/events/{event['id']}/explanations").json()
    methods = {e["method"] for e in explanations["data"]}
    assert methods == {"grad_cam", "guided_backprop", "guided_grad_cam"}
    for item in explanations["data"]:
        image = client.get(item["overlay_url"])
        assert image.status_code == 200 and image.content[:8] == b"\x89PNG\r\n\x1a\n"
    video_url = next(e["video_url"] for e in explanations["data"] if e["method"] == "grad_cam")
    video = client.get(video_url)
    assert video.status_code == 200 and b"ftyp" in video.content[:64]
    partial = client.get(video_url, headers={"Range": "bytes=0-99"})
    assert partial.status_code == 206 and len(partial.content) == 100
    clip = client.get(event["clip_url"])
    assert clip.status_code == 200 and clip.headers["content-type"] == "video/mp4"
    assert clip.content.find(b"moov") < clip.content.find(b"mdat")  # faststart: playable while loading
    seek = client.get(event["clip_url"], headers={"Range": "bytes=1000-1999"})
    assert seek.status_code == 206 and seek.content == clip.content[1000:2000]
    key_frame = client.get(event["key_frame_url"])
    assert key_frame.status_code == 200 and key_frame.content[:4] == b"\x89PNG"

    headers = admin(client)  # jobs are for admins
    job_ids = [j for j in range(1, 5) if client.get(f"/api/v1/jobs/{j}", headers=headers).status_code == 200]
    assert client.get(f"/api/v1/jobs/{job_ids[0]}", headers=headers).json()["status"] == "succeeded"

    # every read of patient data above, and the upload, is in the audit trail under the clinician's name
    trail = client.get("/api/v1/audit", params={"user": "test-clinician", "limit": 1000}, headers=headers).json()
    actions = {(e["action"], e["object_type"], e["object_id"]) for e in trail["data"]}
    assert ("upload_recording", "recording", str(recording["id"])) in actions
    for action in ("read_event_clip", "read_key_frame", "read_explanations"):
        assert (action, "event", str(event["id"])) in actions, action
    assert ("read_explanation_media", "explanation", str(explanations["data"][0]["id"])) in actions
    assert all(e["outcome"] == "allowed" and e["role"] == "clinician" for e in trail["data"])


def test_review_decisions(client: TestClient, ward_video) -> None:  # type: ignore[no-untyped-def]
    recording = upload(client, ward_video.video).json()
    wait_for_tasks(client)
    events = client.get("/api/v1/events", params={"recording": recording["id"]}).json()["data"]
    assert events
    first = events[0]["id"]

    confirmed = client.post(f"/api/v1/events/{first}/review", json={"decision": "confirmed", "note": "seen"})
    assert confirmed.status_code == 200
    assert confirmed.json()["status"] == "confirmed" and confirmed.json()["note"] == "seen"
    assert confirmed.json()["reviewed_at"] is not None

    relabelled = client.post(f"/api/v1/events/{first}/review", json={"decision": "relabelled", "label": "fall"})
    assert relabelled.json()["status"] == "relabelled" and relabelled.json()["reviewed_label"] == "fall"

    assert client.get("/api/v1/events", params={"status": "relabelled"}).json()["count"] == 1
    assert client.get("/api/v1/events", params={"status": "flagged"}).json()["count"] == len(events) - 1

    bad = [
        {"decision": "maybe"},
        {"decision": "relabelled"},
        {"decision": "confirmed", "label": "fall"},
        {"decision": "confirmed", "extra": 1},
    ]
    for body in bad:
        answer = client.post(f"/api/v1/events/{first}/review", json=body)
        assert answer.status_code == 422, body
        assert answer.json()["detail"]
    broken = client.post(f"/api/v1/events/{first}/review", content=b"{not json",
                         headers={"Content-Type": "application/json"})
    assert broken.status_code == 422
    assert client.get(f"/api/v1/events/{first}").json()["status"] == "relabelled"  # bad input changed nothing


def test_pagination_and_unknown_ids(client: TestClient, ward_video) -> None:  # type: ignore[no-untyped-def]
    assert upload(client, ward_video.video).status_code == 201
    duplicate = upload(client, ward_video.video)
    assert duplicate.status_code == 409 and "same content as recording 1" in duplicate.json()["detail"]
    for _ in range(2):
        assert upload(client, ward_video.video, allow_duplicate="true").status_code == 201
    wait_for_tasks(client)
    first = client.get("/api/v1/recordings", params={"limit": 2}).json()
    assert first["count"] == 4 and len(first["data"]) == 2 and first["next_cursor"] is not None
    second = client.get("/api/v1/recordings", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert len(second["data"]) == 2 and second["next_cursor"] is None  # a full last page says it is the last
    assert {r["id"] for r in first["data"] + second["data"]} == {1, 2, 3, 4}
    assert client.get("/api/v1/recordings", params={"status": "failed"}).json()["count"] == 1

    total = client.get("/api/v1/events").json()["count"]
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/v1/events", params=params).json()
        seen += [e["id"] for e in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == total

    for path in ("/api/v1/recordings/999", "/api/v1/events/999", "/api/v1/events/999/explanations",
                 "/api/v1/jobs/999", "/api/v1/explanations/999/overlay.png"):
        answer = client.get(path, headers=admin(client) if "/jobs/" in path else None)
        assert answer.status_code == 404, path
        assert "not found" in answer.json()["detail"]
    assert client.post("/api/v1/events/999/review", json={"decision": "rejected"}).status_code == 404
    assert client.get("/api/v1/explanations/1/secret.txt").status_code == 404  # no such media: not found
    assert client.get("/api/v1/recordings", params={"limit": 0}).status_code == 422


def test_rescoring_is_idempotent(client: TestClient, ward_video) -> None:  # type: ignore[no-untyped-def]
    recording = upload(client, ward_video.video).json()
    wait_for_tasks(client)
    before = client.get("/api/v1/events", params={"recording": recording["id"]}).json()
    client.app.state.dispatcher.process_recording(recording["id"], None)  # type: ignore[attr-defined]
    wait_for_tasks(client)
    after = client.get("/api/v1/events", params={"recording": recording["id"]}).json()
    assert [e["id"] for e in after["data"]] == [e["id"] for e in before["data"]]
    assert client.get(f"/api/v1/recordings/{recording['id']}").json()["status"] == "scored"


def test_health_ready_docs(client: TestClient) -> None:
    assert client.get("/api/v1/health").json() == {"status": "ok", "version": "0.1.0", "mode": "embedded"}
    ready = client.get("/api/v1/ready").json()
    assert ready["status"] == "ready" and ready["model"]["name"] == "demo_tiny3d"
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/recordings", "/api/v1/events/{event_id}/review",
            "/api/v1/events/{event_id}/explanations"} <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and "Wardwatch" in page.text
