"""The recordings page in real Chromium: an admin uploads a recording and sees it scored (progress to 100 %),
imports one from the server's import folder, starts a live stream (ffmpeg on loopback, as
tests/server/test_stream.py does) and stops it; refused files, paths and URLs read as the server's sentence and
a file that is not a video stays listed as failed with its reason; paging by the server's cursor; a clinician
may upload but sees no job progress (jobs are admin-only, and the page says so); axe-core on each state."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import func, select

from ingest.synthetic import SynthConfig, generate
from server.db.session import session_scope
from server.db.tables import Clip
from server.main import create_app
from server.settings import Settings
from tests.accounts import bearer, ensure_user
from tests.conftest import free_port, running_server
from tests.web.a11y import assert_accessible
from tests.web.conftest import ARTIFACTS, sign_in

pytestmark = pytest.mark.browser
FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Any, Path]]:
    """The server (an import folder with a short second recording in it, loopback streams allowed)."""
    imports = tmp_path / "imports"
    generate(imports, SynthConfig(seconds=8, seed=5, events_per_minute=0), name="bay-2.mp4")
    settings = Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu", import_dir=imports,
                        stream_max_reconnects=3, stream_allowed_networks=["127.0.0.1/32"])
    app = create_app(settings)
    with running_server(app) as base:
        ensure_user(app, "admin")
        ensure_user(app, "clinician")
        yield base, app, tmp_path


def _recording(base: str, headers: dict[str, str], recording_id: int) -> dict:
    return httpx.get(f"{base}/api/v1/recordings/{recording_id}", headers=headers).json()


def _clips(app: Any, recording_id: int) -> int:
    """Clips committed so far (a live stream's recording counts them only when the stream ends)."""
    with session_scope(app.state.session_factory) as session:
        return session.scalar(select(func.count()).select_from(Clip).where(Clip.recording_id == recording_id)) or 0


@pytest.mark.timeout(900)
def test_upload_import_stream_and_paging(served: tuple[str, Any, Path], page: Page, ward_video) -> None:  # type: ignore[no-untyped-def]
    base, app, tmp_path = served
    admin = bearer(app, "admin")
    page.set_viewport_size({"width": 1366, "height": 768})
    page.goto(f"{base}/recordings.html")
    sign_in(page, "test-admin")
    expect(page.locator("#site-nav a[aria-current=page]")).to_have_text("Recordings")
    expect(page.locator("#recordings-count")).to_have_text("No recordings yet.")
    assert_accessible(page)

    # upload through the page: listed at once, scored in the background, progress to 100 %
    page.get_by_label("Video file").set_input_files(str(ward_video.video))
    page.get_by_label("Room", exact=True).first.fill("icu-1")
    page.get_by_label("Patient reference").fill("p-0042")
    page.get_by_role("button", name="Upload").click()
    status = page.locator("#upload-status")
    expect(status).to_contain_text("uploaded", timeout=60_000)
    (uploaded,) = httpx.get(f"{base}/api/v1/recordings", headers=admin).json()["data"]
    assert uploaded["room"] == "icu-1" and uploaded["patient_ref"] == "p-0042" and uploaded["source"] == "ward.mp4"
    row = page.locator(f"#recording-{uploaded['id']}")
    expect(row).to_contain_text("icu-1")
    expect(row).to_have_attribute("data-status", "scored", timeout=300_000)
    scored = _recording(base, admin, uploaded["id"])
    assert scored["status"] == "scored" and scored["clip_count"] > 0
    expect(row.locator("td").nth(5)).to_have_text(str(scored["clip_count"]))
    expect(row.locator("progress")).to_have_js_property("value", 1)
    expect(row).to_contain_text("100%")

    # the same file again, and a file that is not a video: the server's reasons, the failed one listed
    page.get_by_label("Video file").set_input_files(str(ward_video.video))
    page.get_by_role("button", name="Upload").click()
    expect(status).to_contain_text("Upload refused — 409")
    junk = tmp_path / "notes.mp4"
    junk.write_bytes(b"this is not a video at all" * 100)
    page.get_by_label("Video file").set_input_files(str(junk))
    page.get_by_role("button", name="Upload").click()
    expect(status).to_contain_text("Upload refused — 422")
    failed = httpx.get(f"{base}/api/v1/recordings", params={"status": "failed"}, headers=admin).json()["data"][0]
    failed_row = page.locator(f"#recording-{failed['id']}")
    expect(failed_row).to_have_attribute("data-status", "failed")
    expect(failed_row.locator(".error").first).to_have_text(failed["error"])

    # server-side import: a path outside the folder is refused, a file inside it is scored in place
    page.get_by_label("File path").fill("../data/wardwatch.db")
    page.get_by_role("button", name="Import").click()
    expect(page.locator("#import-status")).to_contain_text("Refused — 422")
    page.get_by_label("File path").fill("bay-2.mp4")
    page.get_by_role("button", name="Import").click()
    expect(page.locator("#import-status")).to_contain_text("imported")
    imported = httpx.get(f"{base}/api/v1/recordings", headers=admin).json()["data"][0]
    assert imported["source"] == "bay-2.mp4"
    expect(page.locator(f"#recording-{imported['id']}")).to_have_attribute("data-status", "scored", timeout=300_000)

    # a live stream: refused URL, then a real one on loopback, live, stopped from the page
    page.get_by_label("Stream URL").fill("file:///etc/passwd")
    page.get_by_role("button", name="Start stream").click()
    expect(page.locator("#stream-status")).to_contain_text("Refused — 422")
    port = free_port()
    ffmpeg = subprocess.Popen(
        [FFMPEG, "-loglevel", "error", "-re", "-i", str(ward_video.video), "-c", "copy", "-f", "mpegts",
         f"tcp://127.0.0.1:{port}?listen=1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        page.get_by_label("Stream URL").fill(f"tcp://127.0.0.1:{port}")
        page.locator("#stream-room").fill("icu-3")
        page.get_by_role("button", name="Start stream").click()
        expect(page.locator("#stream-status")).to_contain_text("started")
        stream = httpx.get(f"{base}/api/v1/recordings", headers=admin).json()["data"][0]
        stream_row = page.locator(f"#recording-{stream['id']}")
        expect(stream_row).to_have_attribute("data-status", "live", timeout=30_000)
        expect(stream_row).to_contain_text("live since")
        deadline = time.monotonic() + 60
        while _clips(app, stream["id"]) < 3:  # clips arrive while the stream runs
            assert time.monotonic() < deadline, "no clips from the stream"
            time.sleep(0.5)
        page.screenshot(path=str(ARTIFACTS / "recordings-live.png"), full_page=True)
        assert_accessible(page)
        stream_row.get_by_role("button", name=f"Stop stream {stream['id']}").click()
        expect(page.locator("#recordings-status")).to_contain_text(f"Stopping stream {stream['id']}")
        expect(stream_row).to_have_attribute("data-status", "scored", timeout=60_000)
        expect(stream_row).to_contain_text("stream stopped")
        expect(stream_row.get_by_role("button")).to_have_count(0)
        jobs = httpx.get(f"{base}/api/v1/jobs", params={"kind": "stream"}, headers=admin).json()["data"]
        assert jobs[0]["recording_id"] == stream["id"] and jobs[0]["result"]["stopped"] is True
        final = _recording(base, admin, stream["id"])
        assert final["status"] == "scored" and final["clip_count"] >= 3
        expect(stream_row.locator("td").nth(5)).to_have_text(str(final["clip_count"]))
    finally:
        ffmpeg.kill()
        ffmpeg.wait()

    # paging: enough refused uploads for three pages of 10 (newest first, the server's order)
    for i in range(18):
        refused = httpx.post(f"{base}/api/v1/recordings", headers=admin,
                             files={"file": (f"junk-{i}.mp4", f"not a video {i}".encode() * 50)})
        assert refused.status_code == 422
    page.get_by_label("Per page").select_option("10")
    every = httpx.get(f"{base}/api/v1/recordings", params={"limit": 100}, headers=admin).json()
    ids = [r["id"] for r in every["data"]]
    rows = page.locator("#recording-rows tr")
    count = page.locator("#recordings-count")
    expect(count).to_have_text(f"{every['count']} recordings; showing 1–10, newest first.")
    assert rows.evaluate_all("rs => rs.map(r => Number(r.dataset.id))") == ids[:10]
    page.get_by_role("button", name="Older →").click()
    expect(count).to_have_text(f"{every['count']} recordings; showing 11–20, newest first.")
    assert rows.evaluate_all("rs => rs.map(r => Number(r.dataset.id))") == ids[10:20]
    page.get_by_role("button", name="Older →").click()
    expect(count).to_have_text(f"{every['count']} recordings; showing 21–{len(ids)}, newest first.")
    expect(page.get_by_role("button", name="Older →")).to_be_disabled()
    page.get_by_role("button", name="← Newer").click()
    expect(count).to_have_text(f"{every['count']} recordings; showing 11–20, newest first.")
    page.get_by_label("Status", exact=True).select_option("scored")
    expect(count).to_have_text("3 recordings; showing 1–3, newest first.")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1024, "height": 768})
    assert_accessible(page)
    page.screenshot(path=str(ARTIFACTS / "recordings.png"), full_page=True)

    # a clinician may add recordings but not read jobs: the page says why progress is missing
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, "test-clinician")
    expect(page.locator("#jobs-note")).to_contain_text("only admins may read")
    expect(page.get_by_role("button", name="Upload")).to_be_visible()
    expect(page.locator("#recordings-count")).to_have_text(f"{every['count']} recordings; showing 1–20, newest first.")
    expect(page.locator("#recording-rows progress")).to_have_count(0)
    assert_accessible(page)
