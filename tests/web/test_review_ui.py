"""The review page in real Chromium: the clinician signs in through the page (wrong password first), the queue
lists scored events, an event opens with its overlays, the decision reaches the API with the signed-in
clinician as reviewer, a session that ended mid-review asks for the password again, and signing out ends the
session on the server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from server.main import create_app
from server.settings import Settings
from tests.accounts import bearer, ensure_user
from tests.conftest import running_server
from tests.web.conftest import ARTIFACTS, sign_in, upload_and_score, wait_until

pytestmark = pytest.mark.browser


@pytest.fixture
def live_server(tmp_path: Path, ward_video) -> Iterator[tuple[str, dict[str, str]]]:  # type: ignore[no-untyped-def]
    """(base URL, headers of a clinician token for the test's own API calls)."""
    app = create_app(Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu"))
    with running_server(app) as base:
        headers = bearer(app, "clinician")
        ensure_user(app, "admin")
        upload_and_score(base, app, ward_video.video, headers)
        yield base, headers


def test_review_an_event_in_the_browser(live_server: tuple[str, dict[str, str]], page: Page) -> None:
    base, headers = live_server
    events = httpx.get(f"{base}/api/v1/events", headers=headers).json()
    assert events["count"] >= 1
    page.goto(base)
    expect(page.get_by_label("Username")).to_be_focused()
    page.get_by_label("Username").fill("test-clinician")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-message")).to_have_text("Wrong username or password.")
    expect(page.locator(".event-item")).to_have_count(0)  # nothing of the queue before signing in
    page.get_by_label("Username").fill("")
    sign_in(page, "test-clinician")

    items = page.locator(".event-item")
    expect(items).to_have_count(events["count"])
    expect(page.locator("#queue-count")).to_contain_text(f"{events['count']} event")

    items.first.click()
    expect(page.locator("#event-detail")).to_be_visible()
    first = events["data"][0]
    expect(page.locator("#event-title")).to_contain_text(f"event {first['id']}")
    # the explanation is drawn on the review clip (tests/web/test_workspace_ui.py checks its pixels)
    expect(page.locator("#clip-figure")).to_be_visible()
    expect(page.locator("#overlay-state")).to_have_text("Grad-CAM drawn on the video")
    expect(page.locator("#event-clip")).to_have_attribute("src", first["clip_url"])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review.png"), full_page=True)

    page.fill("#review-note", "patient on the floor, nurse called")
    page.click("#confirm")  # a cookie-authenticated write: the page sends the session's CSRF token
    expect(page.locator("#review-status")).to_have_text("Saved: confirmed")
    reviewed = httpx.get(f"{base}/api/v1/events/{first['id']}", headers=headers).json()
    assert reviewed["status"] == "confirmed" and reviewed["note"] == "patient on the floor, nurse called"
    assert reviewed["reviewer"] == "test-clinician"

    page.select_option("#filter-status", "confirmed")
    expect(page.locator(".event-item")).to_have_count(1)
    if events["count"] > 1:
        page.select_option("#filter-status", "flagged")
        expect(page.locator(".event-item")).to_have_count(events["count"] - 1)
        page.keyboard.press("j")
        expect(page.locator("#event-detail")).to_be_visible()
        # the session ends (expired, revoked): the page asks for the password and then saves the decision
        page.context.clear_cookies()
        page.keyboard.press("r")
        expect(page.locator("#signin-message")).to_contain_text("session has ended")
        sign_in(page, "test-clinician")
        expect(page.locator("#review-status")).to_have_text("Saved: rejected")

    cookie = next(c for c in page.context.cookies() if c["name"] == "wardwatch_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to Wardwatch")).to_be_visible()
    stale = httpx.get(f"{base}/api/v1/session", cookies={"wardwatch_session": cookie["value"]})
    assert stale.status_code == 401  # signed out on the server, not only in this browser


def test_an_admin_cannot_review_and_the_page_says_so(live_server: tuple[str, dict[str, str]], page: Page) -> None:
    base, headers = live_server
    page.goto(base)
    sign_in(page, "test-admin")
    page.locator(".event-item").first.click()
    page.click("#confirm")
    expect(page.locator("#review-status")).to_have_text("Not saved — 403: the admin role may not do this")
    first = httpx.get(f"{base}/api/v1/events", headers=headers).json()["data"][0]
    assert first["status"] == "flagged"

    # the admin's session ends mid-action and a clinician signs in at the same screen: the pending request
    # is not resent as the clinician (that would be a review in their name); the page starts afresh instead
    page.evaluate("window.__beforeSignIn = true")
    page.context.clear_cookies()
    page.click("#confirm")
    expect(page.locator("#signin-message")).to_contain_text("session has ended")
    sign_in(page, "test-clinician")
    wait_until(page, "window.__beforeSignIn === undefined")  # reloaded
    expect(page.locator("#user-name")).to_contain_text("test-clinician")
    expect(page.locator(".event-item").first).to_be_visible()
    again = httpx.get(f"{base}/api/v1/events/{first['id']}", headers=headers).json()
    assert again["status"] == "flagged" and again["reviewer"] is None


def test_sign_in_is_throttled_with_a_clear_message(tmp_path: Path, page: Page) -> None:
    app = create_app(Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu", login_max_failures=2))
    with running_server(app) as base:
        ensure_user(app, "clinician")
        page.goto(base)
        for _ in range(2):
            page.get_by_label("Username").fill("test-clinician")
            page.get_by_label("Password").fill("guess")
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#signin-message")).to_have_text("Wrong username or password.")
            page.locator("#signin-message").evaluate("m => m.textContent = ''")
        page.get_by_label("Password").fill("correct horse battery staple")  # even the right one, for now
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#signin-message")).to_have_text("Too many failed sign-ins. Try again in 15 minutes.")
        expect(page.locator("#signin")).to_be_visible()


def test_relabel_history_and_undo_in_the_browser(live_server: tuple[str, dict[str, str]], page: Page) -> None:
    """The relabel list offers the classes of the event's model; each decision appears in the history; the
    clinician's own latest review can be undone (button or ``u``), back to the decision before, then to flagged."""
    base, headers = live_server
    page.goto(base)
    sign_in(page, "test-clinician")
    page.locator(".event-item").first.click()
    first = httpx.get(f"{base}/api/v1/events", headers=headers).json()["data"][0]
    classes = httpx.get(f"{base}/api/v1/models", headers=headers).json()[0]["class_names"]
    expect(page.locator("#relabel-label option")).to_have_count(len(classes))
    expect(page.locator("#undo")).to_be_hidden()  # nothing of this clinician's to undo yet
    expect(page.locator("#history-count")).to_have_text("0")

    other = next(c for c in classes if c != first["label"])
    page.select_option("#relabel-label", other)
    page.click("#relabel")
    expect(page.locator("#review-status")).to_have_text("Saved: relabelled")
    page.click("#confirm")
    expect(page.locator("#review-status")).to_have_text("Saved: confirmed")
    expect(page.locator("#history-count")).to_have_text("2")
    expect(page.locator("#undo")).to_be_visible()

    latest = httpx.get(f"{base}/api/v1/events/{first['id']}/reviews", headers=headers).json()["data"][0]["id"]
    with page.expect_request(lambda r: r.url.endswith("/review/undo")) as undo_request:
        page.keyboard.press("u")
    # the page names the review it shows as the latest: a double click or a retry is a 409, not a second undo
    assert undo_request.value.post_data_json == {"review_id": latest}
    expect(page.locator("#review-status")).to_have_text("Undone: now relabelled")
    expect(page.locator("#history-list li.undone")).to_have_count(1)
    expect(page.locator("#history-list li").first).to_contain_text("undone by test-clinician")
    now = httpx.get(f"{base}/api/v1/events/{first['id']}", headers=headers).json()
    assert (now["status"], now["reviewed_label"]) == ("relabelled", other)
    page.click("#undo")
    expect(page.locator("#review-status")).to_have_text("Undone: now flagged")
    expect(page.locator("#undo")).to_be_hidden()
    expect(page.locator("#history-list li.undone")).to_have_count(2)
    assert httpx.get(f"{base}/api/v1/events/{first['id']}", headers=headers).json()["status"] == "flagged"
