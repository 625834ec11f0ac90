"""The review workspace's queue and its robustness in real Chromium (one real server for the module, the
synthetic recording scored by the real pipeline): filters, sort, counts per status and cursor paging; API
errors read as sentences; axe-core on every state of the page at 1366x768 and 1024x768, no sideways scrolling,
visible focus."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.web.a11y import assert_accessible
from tests.web.conftest import ARTIFACTS, sign_in, wait_until
from tests.web.workspace import (
    DOCS_SCREENSHOTS,
    delete_event,
    filter_room,
    seed_events,
    workspace_server,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, ward_video) -> Iterator[SimpleNamespace]:  # type: ignore[no-untyped-def]
    yield from workspace_server(tmp_path_factory, ward_video)


def test_queue_filters_counts_and_paging(ws: SimpleNamespace, page: Page) -> None:
    seed_events(ws.app, room="Ward 9", count=60)
    page.goto(ws.base)
    sign_in(page, "test-clinician")
    filter_room(page, "Ward 9")

    def api_count(**params: str) -> int:
        return httpx.get(f"{ws.base}/api/v1/events", params={"room": "Ward 9", "status": "flagged", **params},
                         headers=ws.headers).json()["count"]

    expect(page.locator("#queue-count")).to_have_text("60 events (50 shown)")
    expect(page.locator(".event-item")).to_have_count(50)
    page.locator(".event-item").nth(49).click()
    page.keyboard.press("j")  # past the end of the page: the next page (the server's cursor), its first event
    expect(page.locator(".event-item")).to_have_count(60)
    expect(page.locator(".event-item.selected")).to_have_attribute(
        "data-id", page.locator(".event-item").nth(50).get_attribute("data-id") or "")
    page.select_option("#filter-status", "flagged")  # a reload: the first page again
    expect(page.locator(".event-item")).to_have_count(50)
    page.get_by_role("button", name="Load more").click()
    expect(page.locator(".event-item")).to_have_count(60)
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()
    ids = page.locator(".event-item").evaluate_all("items => items.map(i => i.dataset.id)")
    assert len(set(ids)) == 60

    label = page.locator("#filter-label option").nth(1).get_attribute("value")
    page.select_option("#filter-label", label)
    expect(page.locator(".event-item")).to_have_count(api_count(label=label))
    page.select_option("#filter-label", "")
    page.fill("#filter-min-score", "80")
    page.press("#filter-min-score", "Enter")
    expect(page.locator(".event-item")).to_have_count(api_count(min_score="0.8"))
    assert 0 < api_count(min_score="0.8") < 60
    page.fill("#filter-min-score", "")
    since = "2026-11-30T08:10"  # a local time, as the browser's date field gives it
    page.fill("#filter-since", since)
    page.locator("#filter-since").dispatch_event("change")
    iso = page.evaluate(f"new Date('{since}').toISOString()")
    expected = api_count(since=iso)
    assert 0 < expected < 60
    expect(page.locator("#queue-count")).to_have_text(f"{expected} events" if expected <= 50
                                                      else f"{expected} events (50 shown)")
    # the per-status counts ignore the status filter; a chip selects its status
    expect(page.locator("#status-counts")).to_contain_text(f"to review {expected}")
    page.get_by_role("button", name="confirmed 0").click()
    expect(page.locator("#filter-status")).to_have_value("confirmed")
    expect(page.locator(".event-item")).to_have_count(0)
    assert_accessible(page)


def test_api_errors_read_as_sentences(ws: SimpleNamespace, page: Page) -> None:
    (gone, kept) = seed_events(ws.app, room="Isolation 1", count=2)
    page.goto(ws.base)
    sign_in(page, "test-clinician")
    filter_room(page, "Isolation 1")
    expect(page.locator(".event-item")).to_have_count(2)
    page.locator(f'.event-item[data-id="{gone}"]').click()
    expect(page.locator("#event-title")).to_contain_text(f"event {gone}")
    delete_event(ws.app, gone)  # deleted meanwhile (retention, another user)
    page.keyboard.press("c")
    status = page.locator("#review-status")
    expect(status).to_contain_text("Not saved — 404: ")
    text = status.inner_text()
    assert "[object" not in text and "{" not in text and "Traceback" not in text, text
    assert_accessible(page)

    # a validation error (422) of a missed event past the recording's end is a sentence too
    page.locator(f'.event-item[data-id="{kept}"]').click()
    expect(page.locator("#event-title")).to_contain_text(f"event {kept}")
    page.fill("#missed-start", "590")
    page.fill("#missed-end", "9999")
    page.locator("#missed-end").dispatch_event("change")
    page.get_by_role("button", name="Save missed event").click()
    expect(page.locator("#missed-status")).to_contain_text("Not saved — 422: ")
    text = page.locator("#missed-status").inner_text()
    assert "[object" not in text and "{" not in text, text
    page.screenshot(path=str(ARTIFACTS / "workspace-api-error.png"), full_page=True)


@pytest.mark.parametrize("viewport", [(1366, 768), (1024, 768)])
def test_every_state_is_accessible_at_both_sizes(ws: SimpleNamespace, page: Page, viewport: tuple[int, int]) -> None:
    width, height = viewport
    page.set_viewport_size({"width": width, "height": height})
    page.goto(ws.base)
    expect(page.get_by_label("Username")).to_be_focused()
    assert_accessible(page)  # the sign-in form
    page.get_by_label("Username").fill("test-clinician")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-message")).to_have_text("Wrong username or password.")
    assert_accessible(page)
    page.get_by_label("Username").fill("")
    sign_in(page, "test-clinician")
    filter_room(page, "")
    expect(page.locator(".event-item").first).to_be_visible()
    assert_accessible(page)  # the queue, nothing selected
    page.screenshot(path=str(ARTIFACTS / f"workspace-queue-{width}.png"))
    page.select_option("#filter-sort", "score")  # highest score first: the pipeline's strongest flag on top
    page.locator("#filter-sort").blur()
    scores = httpx.get(f"{ws.base}/api/v1/events", params={"status": "flagged", "sort": "score"},
                       headers=ws.headers).json()["data"]
    expect(page.locator(".event-item").first).to_have_attribute("data-id", str(scores[0]["id"]))
    assert scores[0]["peak_score"] == max(e["peak_score"] for e in scores)
    page.keyboard.press("j")
    expect(page.locator("#event-detail")).to_be_visible()
    wait_until(page, "document.getElementById('timeline-range').textContent.length > 0")
    assert_accessible(page)  # an event
    if width == 1366:  # the queue beside the event it opened, as the README shows it
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_SCREENSHOTS / "queue.png"))
    no_sideways_scroll = "document.scrollingElement.scrollWidth <= window.innerWidth"
    assert page.evaluate(no_sideways_scroll), "the page scrolls sideways"
    for control in ("#confirm", "#reject", "#relabel", "#overlay-opacity", "#zoom-in", "#missed-label"):
        locator = page.locator(control)
        locator.scroll_into_view_if_needed()
        box = locator.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, f"{control} is off screen"
    page.keyboard.press("e")  # relabelling
    assert_accessible(page)
    page.keyboard.press("Escape")
    page.get_by_label("Side by side").check()
    assert_accessible(page)
    assert page.evaluate(no_sideways_scroll)
    page.screenshot(path=str(ARTIFACTS / f"workspace-event-{width}.png"), full_page=True)
    page.get_by_role("button", name="Keyboard shortcuts (?)").click()
    assert_accessible(page)  # the help dialog
    # focus is visible: the focused control draws an outline
    page.keyboard.press("Escape")
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), outline
