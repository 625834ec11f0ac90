"""The review page in real Chromium: the queue lists scored events, an event opens with its overlays, and the
clinician's decision reaches the API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from server.main import create_app
from server.settings import Settings
from tests.conftest import running_server
from tests.web.conftest import ARTIFACTS, upload_and_score

pytestmark = pytest.mark.browser


@pytest.fixture
def live_server(tmp_path: Path, ward_video) -> Iterator[str]:  # type: ignore[no-untyped-def]
    app = create_app(Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu"))
    with running_server(app) as base:
        upload_and_score(base, app, ward_video.video)
        yield base


def test_review_an_event_in_the_browser(live_server: str, page: Page) -> None:
    events = httpx.get(f"{live_server}/api/v1/events").json()
    assert events["count"] >= 1
    page.goto(live_server)
    items = page.locator(".event-item")
    expect(items).to_have_count(events["count"])
    expect(page.locator("#queue-count")).to_contain_text(f"{events['count']} event")

    items.first.click()
    expect(page.locator("#event-detail")).to_be_visible()
    first = events["data"][0]
    expect(page.locator("#event-title")).to_contain_text(f"event {first['id']}")
    expect(page.locator(".tab")).to_have_count(4)
    overlay = page.locator("#overlay")
    expect(overlay).to_have_attribute("src", f"/api/v1/explanations/{_first_explanation(live_server, first)}"
                                             "/overlay.png")
    page.wait_for_function("document.getElementById('overlay').naturalWidth > 0")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review.png"), full_page=True)

    page.keyboard.press("2")
    expect(page.locator("#overlay-caption")).to_have_text("Guided Backprop")
    page.wait_for_function("document.getElementById('overlay').naturalWidth > 0")
    expect(page.locator("#video-figure")).to_be_visible()
    expect(page.locator("#clip-figure")).to_be_visible()

    page.fill("#review-note", "patient on the floor, nurse called")
    page.click("#confirm")
    expect(page.locator("#review-status")).to_have_text("Saved: confirmed")
    reviewed = httpx.get(f"{live_server}/api/v1/events/{first['id']}").json()
    assert reviewed["status"] == "confirmed" and reviewed["note"] == "patient on the floor, nurse called"

    page.select_option("#filter-status", "confirmed")
    expect(page.locator(".event-item")).to_have_count(1)
    if events["count"] > 1:
        page.select_option("#filter-status", "flagged")
        expect(page.locator(".event-item")).to_have_count(events["count"] - 1)
        page.keyboard.press("j")
        expect(page.locator("#event-detail")).to_be_visible()
        page.keyboard.press("x")
        expect(page.locator("#review-status")).to_have_text("Saved: rejected")


def _first_explanation(base: str, event: dict) -> int:
    return httpx.get(f"{base}/api/v1/events/{event['id']}/explanations").json()["data"][0]["id"]
