"""Per-frame explanation maps stored at scoring time and served by ``GET /events/{id}/maps``; the review clip's
``clip_start``. The maps are checked against the attribution engine run directly on the same frames."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from sqlalchemy import select

from ingest.clips import iter_clips
from ingest.decode import read_frames
from model.attribution import GradCAM, GuidedBackprop
from model.inference import frames_to_tensor
from model.nets import default_target_layer
from model.weights import load_checkpoint
from server.db.session import session_scope
from server.db.tables import Clip, Event, ModelVersion, Recording
from server.main import create_app
from server.pipeline import clip_spec_for
from server.settings import Settings
from tests.accounts import act_as
from tests.conftest import free_port
from tests.server.conftest import upload, wait_for_tasks

METHODS = ("grad_cam", "guided_backprop", "guided_grad_cam")
FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
#: review clips start this long before the event: at 15 fps, between two frames (the clip's 0 s is the next one)
PRE_ROLL = 1.95


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None, device="cpu",
                    review_clip_pre_seconds=PRE_ROLL)


def decode(answer: dict) -> dict[str, np.ndarray]:
    """The maps of an answer as uint8 ``[F, h, w]`` per method (the contract's layout)."""
    shape = (len(answer["times"]), answer["height"], answer["width"])
    out = {}
    for method in METHODS:
        raw = np.frombuffer(base64.b64decode(answer["methods"][method]), dtype=np.uint8)
        assert raw.size == np.prod(shape), method
        out[method] = raw.reshape(shape)
    return out


def to_stored(values: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``[F, H, W]`` -> ``[F, h, w]``: bilinear, antialiased (what the contract's low resolution means here)."""
    return F.interpolate(values[:, None].float(), size=(height, width), mode="bilinear", align_corners=False,
                         antialias=True)[:, 0].clamp_min(0)


def to_uint8(values: torch.Tensor) -> np.ndarray:
    """Normalised over the event: the largest value is 255."""
    return np.rint(values.numpy() / float(values.max()) * 255).astype(np.int64)


def _scored_event(client: TestClient, ward_video) -> tuple[dict, dict]:  # type: ignore[no-untyped-def]
    recording = upload(client, ward_video.video).json()
    wait_for_tasks(client)
    events = client.get("/api/v1/events", params={"recording": recording["id"]}).json()["data"]
    assert events
    # the longest event: several clips, so normalisation over the event and the clip choice are exercised
    return recording, max(events, key=lambda e: e["end"] - e["start"])


def test_maps_match_the_attribution_engine(client: TestClient, settings: Settings, ward_video) -> None:  # type: ignore[no-untyped-def]
    recording, event = _scored_event(client, ward_video)
    answer = client.get(f"/api/v1/events/{event['id']}/maps")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"event_id", "width", "height", "times", "methods", "agreement"}
    assert answer.headers["content-encoding"] == "gzip" and answer.num_bytes_downloaded < len(answer.content) / 2
    plain = client.get(f"/api/v1/events/{event['id']}/maps", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.json() == body
    assert body["event_id"] == event["id"] and body["agreement"] == event["agreement"]
    assert (body["width"], body["height"]) == (32, 24)  # 320x240 recording: long side 32, aspect kept
    maps = decode(body)
    times = np.asarray(body["times"])
    assert np.all(np.diff(times) > 0)
    assert all(m.max() == 255 for m in maps.values())  # normalised per method over the event

    stored = np.load(settings.media_dir / "events" / str(event["id"]) / "maps.npz", allow_pickle=False)
    assert event.get("maps_path") is None  # where files live is not the API's business
    assert np.allclose(stored["times"], times, atol=1e-6)
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row = session.get(Event, event["id"])
        version = session.get(ModelVersion, row.model_version_id)
        video = settings.data_dir / session.get(Recording, recording["id"]).path
        clips = {c.index: c for c in session.scalars(select(Clip).where(Clip.recording_id == recording["id"]))}
        label_index = list(version.class_names).index(event["label"])
        overlapping = {i for i, c in clips.items() if c.start < event["end"] and c.end > event["start"]}
        peak = max(overlapping, key=lambda i: clips[i].scores[event["label"]])
        used = sorted({int(i) for i in stored["clip_index"]})
        assert set(used) <= overlapping and peak in used and len(used) == min(8, len(overlapping)) > 1
        clip_times = {i: [float(t) for t in clips[i].timestamps] for i in used}
        # every map is a sampled frame of one of the event's clips, taken where it lies nearest the clip's middle
        for t, i in zip(times, stored["clip_index"], strict=True):
            holders = [j for j in used if any(abs(t - u) < 1e-6 for u in clip_times[j])]
            assert int(i) in holders
            def rank(j: int) -> float:
                position = next(k for k, u in enumerate(clip_times[j]) if abs(t - u) < 1e-6)  # noqa: B023
                return abs(position - (len(clip_times[j]) - 1) / 2)
            assert rank(int(i)) == min(rank(j) for j in holders)
        assert {round(u, 6) for j in used for u in clip_times[j]} == {round(float(t), 6) for t in times}

    loaded = load_checkpoint(version.checkpoint_path, device="cpu")
    # the very pixels that were scored: the scorer's own clips (the worker reads them again from the file)
    scored = {clip.index: clip for clip in iter_clips(video, clip_spec_for(loaded, settings)) if clip.index in used}
    assert all(np.allclose(scored[j].timestamps, clip_times[j], atol=1e-6) for j in used)
    batch = np.stack([scored[j].frames for j in used])
    x = frames_to_tensor(batch, loaded.input_spec)
    cam = GradCAM(loaded.model, default_target_layer(loaded.model)).attribute(x, label_index).detach()  # [N,T,h,w]
    guided = GuidedBackprop(loaded.model).attribute(x, label_index).detach().abs().sum(dim=1)           # [N,T,h,w]
    pick = [(used.index(int(i)), next(k for k, u in enumerate(clip_times[int(i)]) if abs(t - u) < 1e-6))
            for t, i in zip(times, stored["clip_index"], strict=True)]
    expected = {
        "grad_cam": torch.stack([cam[n, k] for n, k in pick]),
        "guided_backprop": torch.stack([guided[n, k] for n, k in pick]),
        "guided_grad_cam": torch.stack([cam[n, k] * guided[n, k] for n, k in pick]),  # the product, full size
    }
    for method, values in expected.items():
        want = to_uint8(to_stored(values, body["width"], body["height"]))
        diff = np.abs(want - maps[method].astype(np.int64))
        assert diff.max() <= 2, (method, diff.max())


def test_maps_not_stored_and_unknown_event(client: TestClient, settings: Settings, ward_video) -> None:  # type: ignore[no-untyped-def]
    _, event = _scored_event(client, ward_video)
    url = f"/api/v1/events/{event['id']}/maps"
    with session_scope(client.app.state.session_factory) as session:  # type: ignore[attr-defined]
        row = session.get(Event, event["id"])
        stored, row.maps_path = row.maps_path, None  # as for an event scored before maps, or a clinician's
    answer = client.get(url)
    assert answer.status_code == 404 and "no stored explanation maps" in answer.json()["detail"]
    with session_scope(client.app.state.session_factory) as session:  # type: ignore[attr-defined]
        session.get(Event, event["id"]).maps_path = stored
    assert client.get(url).status_code == 200
    (settings.data_dir / stored).write_bytes(b"not a zip")
    assert client.get(url).status_code == 404  # damaged: as good as none, not a 500
    (settings.data_dir / stored).unlink()
    assert client.get(url).status_code == 404
    missing = client.get("/api/v1/events/99999/maps")
    assert missing.status_code == 404 and missing.json()["detail"] == "event 99999 not found"
    assert client.get("/api/v1/events/0/maps").status_code == 422


def test_clip_start_maps_player_time_to_recording_time(client: TestClient, settings: Settings,  # type: ignore[no-untyped-def]
                                                       ward_video) -> None:
    recording, event = _scored_event(client, ward_video)
    start = event["clip_start"]
    earliest = max(0.0, event["start"] - PRE_ROLL)
    assert start is not None and earliest <= start < earliest + 1 / 15 + 1e-6  # the first frame in the window
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        video = settings.data_dir / session.get(Recording, recording["id"]).path
    clip = client.get(event["clip_url"])
    path = settings.data_dir / "clip-copy.mp4"
    path.write_bytes(clip.content)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [(float(f.time), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    assert decoded[0][0] == 0.0  # what a player shows at 0 s is the first frame
    height, width = decoded[0][1].shape[:2]
    player_times = [t for t, _ in decoded]
    fps = (len(player_times) - 1) / (player_times[-1] - player_times[0])

    def error(offset: float) -> float:
        """Mean pixel difference of the clip's frames and the recording at clip_start + player time + offset."""
        source = read_frames(video, [start + t + offset for t in player_times], size=(width, height),
                             backend="pyav")
        return float(np.mean([np.abs(f.astype(int) - s.astype(int)).mean() for (_, f), s in zip(decoded, source,
                                                                                              strict=True)]))

    exact = error(0.0)
    assert exact < error(-1 / fps) and exact < error(1 / fps), "clip_start is off by at least one frame"
    assert exact < 4.0  # only x264's loss is left


def test_live_stream_stores_maps(tmp_path: Path, ward_video) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    server = subprocess.Popen(
        [FFMPEG, "-loglevel", "error", "-re", "-i", str(ward_video.video), "-c", "copy", "-f", "mpegts",
         f"tcp://127.0.0.1:{port}?listen=1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    settings = Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu", stream_max_reconnects=3,
                        stream_allowed_networks=["127.0.0.1/32"])
    try:
        time.sleep(0.5)
        with TestClient(create_app(settings)) as client:
            act_as(client, "clinician")
            recording = client.post("/api/v1/recordings", json={"url": f"tcp://127.0.0.1:{port}"}).json()
            deadline = time.monotonic() + 90
            # the first synthetic event closes about 12 s in; stop once one is stored (or the stream ends)
            while not client.get("/api/v1/events", params={"recording": recording["id"]}).json()["data"]:
                assert time.monotonic() < deadline, "no event while streaming"
                time.sleep(0.5)
            assert client.post(f"/api/v1/recordings/{recording['id']}/stop").status_code == 200
            while client.get(f"/api/v1/recordings/{recording['id']}").json()["status"] == "ingesting":
                assert time.monotonic() < deadline + 30, "the stream did not stop"
                time.sleep(0.2)
            events = client.get("/api/v1/events", params={"recording": recording["id"]}).json()["data"]
            for event in events:
                answer = client.get(f"/api/v1/events/{event['id']}/maps")
                assert answer.status_code == 200, answer.text
                body = answer.json()
                maps = decode(body)
                assert max(body["width"], body["height"]) == 32 and all(m.max() == 255 for m in maps.values())
                times = body["times"]
                assert times == sorted(times) and len(set(times)) == len(times) >= 8
                assert event["clip_start"] is not None and event["clip_url"]  # cut from the stream's archive
                with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
                    clip_times = {round(float(t), 6) for c in session.scalars(
                        select(Clip).where(Clip.recording_id == recording["id"])) for t in c.timestamps
                        if c.start < event["end"] and c.end > event["start"]}
                assert {round(t, 6) for t in times} <= clip_times
    finally:
        server.kill()
        server.wait()
