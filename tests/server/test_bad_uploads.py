"""Bad input gets a clear 4xx, the recording is marked failed with its reason, nothing else is lost."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from fastapi.testclient import TestClient

from server.main import create_app
from server.settings import Settings
from tests.accounts import act_as
from tests.server.conftest import upload, wait_for_tasks


def _png(path: Path) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x80\x80\x80" * 8 for _ in range(8))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def _bad_files(tmp_path: Path, good: Path) -> dict[str, Path]:
    text = tmp_path / "notes.mp4"
    text.write_text("patient slept well\n" * 50)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.mp4"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return {"text": text, "png": _png(tmp_path / "image.mp4"), "truncated": truncated, "empty": empty}


def test_bad_uploads_fail_cleanly(client: TestClient, ward_video, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = upload(client, ward_video.video).json()
    wait_for_tasks(client)
    events_before = client.get("/api/v1/events").json()
    assert events_before["count"] >= 1

    for kind, path in _bad_files(tmp_path, ward_video.video).items():
        answer = upload(client, path)
        assert 400 <= answer.status_code < 500, (kind, answer.status_code, answer.text)
        detail = answer.json()["detail"]
        assert "marked failed" in detail, (kind, detail)
        failed_id = int(detail.rsplit("recording ", 1)[1].split()[0])
        failed = client.get(f"/api/v1/recordings/{failed_id}").json()
        assert failed["status"] == "failed", kind
        assert failed["error"] and len(failed["error"]) > 10, kind
        assert client.get("/api/v1/health").status_code == 200

    wait_for_tasks(client)
    assert client.get(f"/api/v1/recordings/{good['id']}").json()["status"] == "scored"
    assert client.get("/api/v1/events").json() == events_before
    statuses = [r["status"] for r in client.get("/api/v1/recordings").json()["data"]]
    assert statuses.count("failed") == 4 and statuses.count("scored") == 1


def test_messages_say_what_is_wrong(client: TestClient, ward_video, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files = _bad_files(tmp_path, ward_video.video)
    assert "empty" in upload(client, files["empty"]).json()["detail"].lower()
    assert "not a video" in upload(client, files["text"]).json()["detail"].lower()
    missing = client.post("/api/v1/recordings", data={"room": "x"})
    assert missing.status_code == 422
    naive = upload(client, ward_video.video, started_at="2026-01-01T08:00:00")
    assert naive.status_code == 422 and "time zone" in str(naive.json()["detail"])
    not_multipart = client.post("/api/v1/recordings", content=b"x", headers={"Content-Type": "text/plain"})
    assert not_multipart.status_code == 422 and "multipart/form-data" in not_multipart.json()["detail"]
    wrong_json = client.post("/api/v1/recordings", json={"file": "x"})
    assert wrong_json.status_code == 422 and "file" in str(wrong_json.json()["detail"])
    neither = client.post("/api/v1/recordings", json={"room": "x"})
    assert neither.status_code == 422 and "exactly one of" in str(neither.json()["detail"])
    bad_json = client.post("/api/v1/recordings", content=b"{oops", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 422
    broken = client.post("/api/v1/recordings", content=b"--abc\r\nContent-Disposition: form-data; name=file",
                         headers={"Content-Type": "multipart/form-data; boundary=abc"})
    assert broken.status_code == 422
    assert client.get("/api/v1/health").status_code == 200


def test_chunked_upload_stops_at_the_limit(tmp_path: Path, ward_video) -> None:  # type: ignore[no-untyped-def]
    """No Content-Length: the streaming parser stops the transfer at the first byte over the limit."""
    settings = Settings(data_dir=tmp_path / "data", max_upload_bytes=50_000, broker_url=None)
    body = (b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\n"
            b"Content-Type: video/mp4\r\n\r\n" + ward_video.video.read_bytes() + b"\r\n--xyz--\r\n")

    def chunks():  # type: ignore[no-untyped-def]
        for start in range(0, len(body), 8192):
            yield body[start:start + 8192]

    with TestClient(create_app(settings)) as client:
        act_as(client, "clinician")
        answer = client.post("/api/v1/recordings", content=chunks(),
                             headers={"Content-Type": "multipart/form-data; boundary=xyz"})
        assert answer.status_code == 413 and "limit" in answer.json()["detail"]
        assert [p for p in (settings.data_dir).rglob("*.mp4")] == []
        assert client.get("/api/v1/recordings").json()["count"] == 0


def test_upload_over_the_limit_is_413(tmp_path: Path, ward_video) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path / "data", max_upload_bytes=10_000, broker_url=None)
    with TestClient(create_app(settings)) as client:
        answer = upload(act_as(client, "clinician"), ward_video.video)
        assert answer.status_code == 413
        assert "limit" in answer.json()["detail"]
        assert list((settings.data_dir / "recordings").rglob("*.mp4")) == []


def test_store_stream_stops_at_the_limit(tmp_path: Path) -> None:
    import io

    from server.services.uploads import UploadTooLargeError, safe_filename, store_stream

    dest = tmp_path / "out.bin"
    size, digest = store_stream(io.BytesIO(b"a" * 1000), dest, limit=1000, chunk=64)
    assert size == 1000 and dest.stat().st_size == 1000 and len(digest) == 64
    try:
        store_stream(io.BytesIO(b"a" * 1001), dest, limit=1000, chunk=64)
    except UploadTooLargeError as exc:
        assert "limit" in str(exc)
    else:
        raise AssertionError("no error past the limit")
    assert not dest.exists()
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename(".hidden video.mp4") == "hidden_video.mp4"
