"""Fine-tuning as a product feature: an admin starts a job, watches it, gets a candidate, promotes it,
rolls back; cancelling leaves no model behind; admin endpoints refuse anonymous callers and clinicians."""

from __future__ import annotations

import math
import time
from pathlib import Path

from fastapi.testclient import TestClient

from server.main import create_app
from server.security.secret_box import new_key
from server.settings import Settings
from tests.accounts import act_as, bearer
from tests.server.conftest import upload, wait_for_tasks

NOBODY = {"Authorization": "Bearer ww_not-a-token"}
TINY = {"epochs": 1, "batch_size": 4, "unlabelled_batch_size": 4, "alpha": 2, "lr": 1e-4, "eval_batch_size": 8}


def _reviewed_recording(client: TestClient, ward_video) -> int:  # type: ignore[no-untyped-def]
    """A clinician uploads and reviews (admins do not review)."""
    clinician = bearer(client.app, "clinician")
    recording = upload(client, ward_video.video).json()
    wait_for_tasks(client)
    events = client.get("/api/v1/events", params={"recording": recording["id"]}).json()["data"]
    assert len(events) >= 2
    for event, decision in zip(events[:2], ("confirmed", "rejected"), strict=True):
        answer = client.post(f"/api/v1/events/{event['id']}/review", json={"decision": decision}, headers=clinician)
        assert answer.status_code == 200, answer.text
    return int(recording["id"])


def _admin_client(tmp_path: Path, db_url: str) -> TestClient:
    """Entered by the caller; every request carries an admin token (``act_as`` once the app has started)."""
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None, device="cpu")
    return TestClient(create_app(settings))


def test_finetune_candidate_activate_rollback(tmp_path: Path, db_url: str, ward_video) -> None:  # type: ignore[no-untyped-def]
    with _admin_client(tmp_path, db_url) as client:
        act_as(client, "admin")
        _reviewed_recording(client, ward_video)
        base = client.get("/api/v1/models").json()[0]
        assert base["state"] == "active"

        assert client.post("/api/v1/finetune-jobs", json={"hyperparameters": TINY}, headers=NOBODY).status_code == 401
        clinician = bearer(client.app, "clinician")
        assert client.post("/api/v1/finetune-jobs", json={"hyperparameters": TINY},
                           headers=clinician).status_code == 403
        bad = client.post("/api/v1/finetune-jobs", json={"hyperparameters": {"epochz": 1}})
        assert bad.status_code == 422 and "epochz" in bad.json()["detail"]
        answer = client.post("/api/v1/finetune-jobs", json={"hyperparameters": TINY})
        assert answer.status_code == 202, answer.text
        job = answer.json()
        assert job["kind"] == "finetune" and job["status"] == "queued"
        assert job["params"]["base_model_id"] == base["id"] and job["params"]["mode"] == "alternating"

        wait_for_tasks(client, timeout=600)
        job = client.get(f"/api/v1/jobs/{job['id']}").json()
        assert job["status"] == "succeeded", job["error"]
        assert job["progress"] == 1.0
        assert job["result"]["progress"]["epoch"] == 1, job["result"]
        assert job["result"]["progress"].get("loss") is not None, job["result"]["progress"]
        curves, history = job["result"]["curves"], job["result"]["history"]
        assert [p["epoch"] for p in curves["epochs"]] == [h["epoch"] + 1 for h in history]  # one point per epoch
        for point, row in zip(curves["epochs"], history, strict=True):
            assert point["loss"] == row["loss"] and point["val_macro_f1"] == row["val_macro_f1"]
            assert point["val_loss"] == row["val_loss"]
        steps = [s for s, _ in curves["steps"]]
        assert steps and steps == sorted(steps) and steps[-1] <= curves["epochs"][-1]["step"]
        assert all(math.isfinite(loss) for _, loss in curves["steps"])  # an ATCON loss may be negative
        data = job["result"]["data"]
        assert data["labelled"] >= 1 and data["unlabelled"] >= 1 and data["validation"] >= 1

        models = {m["id"]: m for m in client.get("/api/v1/models").json()}
        candidate = models[job["result"]["model_version_id"]]
        assert candidate["state"] == "candidate" and candidate["parent_id"] == base["id"]
        provenance = candidate["metrics"]["finetune"]["provenance"]
        assert provenance == {"job_id": job["id"], "base_model_version_id": base["id"]}
        comparison = candidate["metrics"]["comparison"]
        assert {"base", "candidate", "diff_macro_f1"} <= set(comparison)
        assert abs(comparison["candidate"]["macro_f1"] - comparison["base"]["macro_f1"]
                   - comparison["diff_macro_f1"]) < 1e-6

        assert client.post(f"/api/v1/models/{candidate['id']}/activate", headers=NOBODY).status_code == 401
        assert client.post(f"/api/v1/models/{candidate['id']}/activate", headers=clinician).status_code == 403
        promoted = client.post(f"/api/v1/models/{candidate['id']}/activate").json()
        assert promoted["state"] == "active"
        assert client.get("/api/v1/ready").json()["model"]["id"] == candidate["id"]

        # the embedded worker picks the new version up without a restart
        second = upload(client, ward_video.video, allow_duplicate="true").json()
        wait_for_tasks(client)
        assert client.get(f"/api/v1/recordings/{second['id']}").json()["status"] == "scored"
        newer = client.get("/api/v1/events", params={"recording": second["id"]}).json()["data"]
        assert all(e["model_version_id"] == candidate["id"] for e in newer)

        # fine-tuning an older version: the candidate is compared with the base *and* with what is active
        older = client.post("/api/v1/finetune-jobs",
                            json={"hyperparameters": TINY, "base_model_id": base["id"]}).json()
        wait_for_tasks(client, timeout=600)
        older = client.get(f"/api/v1/jobs/{older['id']}").json()
        assert older["status"] == "succeeded", older["error"]
        # its own version, even where the run repeats the first one's bytes; what is active stays active
        assert older["result"]["model_version_id"] not in (base["id"], candidate["id"])
        assert client.get("/api/v1/ready").json()["model"]["id"] == candidate["id"]
        active_side = older["result"]["comparison"]["others"]["active"]
        assert active_side["model_version_id"] == candidate["id"] and active_side["comparable"] is True
        assert abs(older["result"]["comparison"]["candidate"]["macro_f1"] - active_side["macro_f1"]
                   - active_side["diff_macro_f1"]) < 1e-6
        client.post(f"/api/v1/models/{older['result']['model_version_id']}/activate")

        rolled_back = client.post(f"/api/v1/models/{base['id']}/activate").json()
        assert rolled_back["state"] == "active"
        states = {m["id"]: m["state"] for m in client.get("/api/v1/models").json()}
        assert states == {base["id"]: "active", candidate["id"]: "retired",
                          older["result"]["model_version_id"]: "retired"}
        assert client.post("/api/v1/models/999/activate").status_code == 404


def test_cancel_leaves_no_model(tmp_path: Path, ward_video) -> None:  # type: ignore[no-untyped-def]
    with _admin_client(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}") as client:
        act_as(client, "admin")
        _reviewed_recording(client, ward_video)
        slow = TINY | {"epochs": 200}
        job = client.post("/api/v1/finetune-jobs", json={"hyperparameters": slow}).json()
        deadline = time.monotonic() + 120
        while client.get(f"/api/v1/jobs/{job['id']}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        cancelled = client.post(f"/api/v1/jobs/{job['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        wait_for_tasks(client, timeout=120)
        final = client.get(f"/api/v1/jobs/{job['id']}").json()
        assert final["status"] == "cancelled" and final["finished_at"] is not None
        assert len(client.get("/api/v1/models").json()) == 1
        assert not (tmp_path / "data" / "models" / f"finetune-{job['id']}.pt").exists()
        again = client.post(f"/api/v1/jobs/{job['id']}/cancel")
        assert again.status_code == 409
        listed = client.get("/api/v1/jobs", params={"kind": "finetune"}).json()
        assert listed["count"] == 1 and listed["data"][0]["id"] == job["id"]


def test_finetune_needs_reviews_and_an_admin_in_production(tmp_path: Path, ward_video) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path / "data", broker_url=None, environment="production",
                        secret_keys=[new_key()])
    with TestClient(create_app(settings)) as client:
        refused = client.post("/api/v1/finetune-jobs", json={})
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        clinician = client.post("/api/v1/finetune-jobs", json={}, headers=bearer(client.app, "clinician"))
        assert clinician.status_code == 403 and "clinician" in clinician.json()["detail"]
    with _admin_client(tmp_path / "b", f"sqlite:///{tmp_path / 'b.sqlite'}") as client:
        act_as(client, "admin")
        upload(client, ward_video.video)
        wait_for_tasks(client)
        job = client.post("/api/v1/finetune-jobs", json={"hyperparameters": TINY}).json()
        wait_for_tasks(client)
        failed = client.get(f"/api/v1/jobs/{job['id']}").json()
        assert failed["status"] == "failed" and "no reviewed events" in failed["error"]


def test_finetune_job_pretrained_start_is_checked_before_queueing(tmp_path: Path) -> None:
    """``pretrained`` names torchvision weights only (no server paths), checked against the base's arch."""
    with _admin_client(tmp_path, f"sqlite:///{tmp_path / 'w.db'}") as client:
        act_as(client, "admin")
        for spec, reason in (("/etc/passwd", "pattern"), ("torchvision:r3d_18", "r3d_18")):
            answer = client.post("/api/v1/finetune-jobs", json={"hyperparameters": TINY, "pretrained": spec})
            assert answer.status_code == 422 and reason in answer.text, answer.text
        assert client.get("/api/v1/jobs", params={"kind": "finetune"}).json()["count"] == 0  # nothing queued
