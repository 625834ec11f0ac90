"""The review workspace's queue and its robustness in real Chromium (one real server for the module, the
synthetic recording scored by the real pipeline): filters, sort, counts per status and cursor paging; API
errors read as sentences; axe-core on every state of the page at 1366x768 and 1024x768, no sideways scrolling,
visible focus; decisions made while another is still being saved are all sent; a note never travels to another
event or reviewer; the recording view marks a missed event on a recording the model flagged nothing in; a
clinician's event's clip seeks and the player's time reaches the timeline."""

from __future__ import annotations

import re
from types import SimpleNamespace

import httpx
import pytest
from playwright.sync_api import Page, Route, expect

from server.db.session import session_scope
from server.db.tables import Event, EventStatus, ModelState, ModelVersion
from server.training_data import build_finetune_data
from tests.web.a11y import assert_accessible
from tests.web.conftest import ARTIFACTS, sign_in, wait_until
from tests.web.workspace import (
    DOCS_SCREENSHOTS,
    copy_without_events,
    delete_event,
    event_row,
    eventually,
    filter_room,
    seed_events,
)

pytestmark = pytest.mark.browser


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


def _held(page: Page, pattern: str) -> list[Route]:
    """Hold the requests matching ``pattern`` (the real server answers each once the test lets it go)."""
    held: list[Route] = []
    page.route(pattern, lambda route: held.append(route))
    return held


def _release(page: Page, pattern: str, held: list[Route]) -> None:
    for route in held:
        route.continue_()
    page.unroute(pattern)


def test_a_decision_while_another_is_saving_is_sent(ws: SimpleNamespace, page: Page) -> None:
    ids = seed_events(ws.app, room="Slow ward", count=3)
    page.goto(ws.base)
    sign_in(page, "test-clinician")
    filter_room(page, "Slow ward")
    expect(page.locator(".event-item")).to_have_count(3)
    pattern = "**/api/v1/events/*/review"
    held = _held(page, pattern)
    page.keyboard.press("j")
    expect(page.locator("#event-title")).to_contain_text(f"event {ids[0]}")
    page.keyboard.press("c")  # A's POST is held in flight ...
    eventually(lambda: (page.wait_for_timeout(20), len(held) == 1)[1], timeout=5)
    page.keyboard.press("j")
    expect(page.locator("#event-title")).to_contain_text(f"event {ids[1]}")
    page.keyboard.press("c")  # ... and B's is sent all the same
    page.wait_for_timeout(50)
    eventually(lambda: (page.wait_for_timeout(20), len(held) == 2)[1], timeout=5)
    page.keyboard.press("c")  # a second press on B while B is saving is refused, saying so
    expect(page.locator("#review-status")).to_contain_text("still saving the previous decision")
    assert len(held) == 2
    _release(page, pattern, held)
    for event_id in ids[:2]:
        assert eventually(lambda e=event_id: (r := event_row(ws.app, e)) and r["status"] == "confirmed" and r)[
            "reviewer"] == "test-clinician"
    assert event_row(ws.app, ids[2])["status"] == "flagged"
    expect(page.locator("#review-status")).to_have_text("Saved: confirmed")
    # filtered to review, the "N events" line follows the decisions as the counts do
    expect(page.locator("#status-counts")).to_contain_text("to review 1")
    expect(page.locator("#queue-count")).to_have_text("1 event")

    # a button pressed with the mouse keeps no focus: space then plays the clip, it does not decide again
    page.keyboard.press("j")
    expect(page.locator("#event-title")).to_contain_text(f"event {ids[2]}")
    page.click("#reject")
    expect(page.locator("#review-status")).to_have_text("Saved: rejected")
    assert page.evaluate("document.activeElement === document.body")


def test_a_stale_queue_answer_is_ignored(ws: SimpleNamespace, page: Page) -> None:
    seed_events(ws.app, room="Stale A", count=2)
    seed_events(ws.app, room="Stale B", count=1)
    page.goto(ws.base)
    sign_in(page, "test-clinician")
    held: list[Route] = []

    def hold_first(route: Route) -> None:  # the first filter's answer comes last
        if "Stale+A" in route.request.url and not held:
            held.append(route)
        else:
            route.continue_()

    page.route("**/api/v1/events?*", hold_first)
    filter_room(page, "Stale A")
    eventually(lambda: (page.wait_for_timeout(20), len(held) == 1)[1], timeout=5)
    filter_room(page, "Stale B")
    expect(page.locator(".event-item")).to_have_count(1)
    held[0].continue_()
    page.wait_for_timeout(500)  # the late answer arrives: it must not replace the newer one
    page.unroute("**/api/v1/events?*")
    expect(page.locator(".event-item")).to_have_count(1)
    expect(page.locator("#queue-count")).to_have_text("1 event")


def test_a_note_stays_with_its_event_and_reviewer(ws: SimpleNamespace, page: Page) -> None:
    (other,) = seed_events(ws.app, room="Prefill ward", count=1)
    with session_scope(ws.app.state.session_factory) as session:  # someone else reviewed it, with a note
        event = session.get(Event, other)
        event.status, event.reviewer, event.note = EventStatus.confirmed, "dr-other", "seen by dr-other"
    # two recordings (so opening the second one fetches its length: a window the test holds open)
    seed_events(ws.app, room="Window ward", count=1)
    seed_events(ws.app, room="Window ward", count=1)
    page.goto(ws.base)
    sign_in(page, "test-clinician")
    page.select_option("#filter-status", "")
    filter_room(page, "Prefill ward")
    page.locator(f'.event-item[data-id="{other}"]').click()
    expect(page.locator("#event-title")).to_contain_text(f"event {other}")
    # the other reviewer's note is shown read-only, never put in my note box
    expect(page.locator("#review-note")).to_have_value("")
    expect(page.locator("#event-facts")).to_contain_text("Note by dr-other")
    expect(page.locator("#event-facts")).to_contain_text("seen by dr-other")
    page.keyboard.press("c")
    expect(page.locator("#review-status")).to_have_text("Saved: confirmed")
    row = event_row(ws.app, other)
    assert (row["reviewer"], row["note"]) == ("test-clinician", None)

    # a note typed on one event, then j and c before the next one's data arrived: no note on the next one
    filter_room(page, "Window ward")
    expect(page.locator(".event-item")).to_have_count(2)
    first, second = (int(i) for i in page.locator(".event-item").evaluate_all("l => l.map(i => i.dataset.id)"))
    page.locator(f'.event-item[data-id="{first}"]').click()
    expect(page.locator("#event-title")).to_contain_text(f"event {first}")
    page.fill("#review-note", "for the first event only")
    page.locator("#review-note").blur()
    pattern = "**/api/v1/recordings/*"
    held = _held(page, pattern)
    page.keyboard.press("j")
    eventually(lambda: (page.wait_for_timeout(20), len(held) >= 1)[1], timeout=5)
    expect(page.locator("#review-note")).to_have_value("")
    page.keyboard.press("c")
    _release(page, pattern, held)
    assert eventually(lambda: event_row(ws.app, second)["status"] == "confirmed")
    assert event_row(ws.app, second)["note"] is None
    assert event_row(ws.app, first)["status"] == "flagged"


def test_recording_view_marks_a_missed_event_where_nothing_was_flagged(ws: SimpleNamespace, page: Page) -> None:
    recording_id = copy_without_events(ws.app, ws.recording["id"], room="Quiet room")
    assert httpx.get(f"{ws.base}/api/v1/events", params={"recording": recording_id},
                     headers=ws.headers).json()["data"] == []
    page.set_viewport_size({"width": 1366, "height": 768})
    page.goto(f"{ws.base}/recordings.html")
    sign_in(page, "test-clinician")
    page.get_by_role("link", name=f"Timeline of recording {recording_id} (mark a missed event)").click()
    expect(page).to_have_url(f"{ws.base}/index.html?recording={recording_id}")
    expect(page.locator("#event-title")).to_have_text(f"Recording {recording_id} (Quiet room) — no event selected")
    expect(page.locator("#recording-hint")).to_be_visible()
    expect(page.locator("#event-grid")).to_be_hidden()
    expect(page.locator("#missed-recording")).to_have_text(f"recording {recording_id}")
    canvas = page.locator("#timeline-canvas")
    expect(canvas).to_have_attribute("aria-label", f"Recording {recording_id} timeline from 0:00 to 0:36: 0 events")
    page.keyboard.press("[")  # no player: the page says what to do instead
    expect(page.locator("#missed-status")).to_contain_text("No player time here")
    assert_accessible(page)
    # a spin of the wheel redraws at once and reads (audited) from the server once it settles
    reads: list[str] = []
    page.on("request", lambda r: reads.append(r.url) if "/timeline?" in r.url else None)
    canvas.hover()
    for _ in range(6):
        page.mouse.wheel(0, -100)
    page.wait_for_timeout(600)
    assert 1 <= len(reads) <= 2, reads
    page.get_by_role("button", name="Whole recording").click()
    expect(canvas).to_have_attribute("aria-label", re.compile(r"from 0:00 to 0:36: 0 events$"))
    page.wait_for_timeout(300)

    duration = ws.recording["duration"]
    page.locator("#missed-form").scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None
    x_of = lambda t: box["x"] + t / duration * box["width"]  # noqa: E731 - the whole recording is shown
    a, b = duration * 0.3, duration * 0.45
    y = box["y"] + box["height"] / 2
    page.mouse.move(x_of(a), y)
    page.mouse.down()
    page.mouse.move(x_of((a + b) / 2), y, steps=4)
    page.mouse.move(x_of(b), y, steps=4)
    page.mouse.up()
    tolerance = duration / box["width"] * 3
    assert abs(float(page.input_value("#missed-start")) - a) < tolerance
    assert abs(float(page.input_value("#missed-end")) - b) < tolerance
    page.fill("#missed-end", f"{b + 0.5:.2f}")  # the typed fields work here too
    page.locator("#missed-end").dispatch_event("change")
    page.select_option("#missed-label", "fall")
    page.fill("#missed-note", "fell beside the bed; the model flagged nothing")
    page.get_by_role("button", name="Save missed event").click()
    expect(page.locator("#missed-status")).to_contain_text("Saved as event")

    added = httpx.get(f"{ws.base}/api/v1/events", params={"recording": recording_id, "source": "clinician"},
                      headers=ws.headers).json()["data"]
    assert len(added) == 1 and added[0]["label"] == "fall" and added[0]["reviewer"] == "test-clinician"
    assert abs(added[0]["start"] - a) < tolerance and abs(added[0]["end"] - (b + 0.5)) < 0.011
    expect(canvas).to_have_attribute("aria-label", re.compile(r": 1 event$"))
    with session_scope(ws.app.state.session_factory) as session:
        base = session.query(ModelVersion).filter(ModelVersion.state == ModelState.active).one()
        data = build_finetune_data(session=session, data_dir=ws.app.state.settings.data_dir, base=base,
                                   mode="supervised", recording_ids=[recording_id])
        index = list(base.class_names).index("fall")
    positives = [c for c in data.labelled + data.validation
                 if c.times[0] < added[0]["end"] and added[0]["start"] < c.times[-1] and c.labels[index] == 1.0]
    assert positives, "the missed event is not a positive example of the fine-tune data"

    # the new event's "Recording" fact leads back to this view
    page.locator("#timeline-canvas").click(position={"x": (x_of(a + 1) - box["x"]), "y": box["height"] / 2})
    expect(page.locator("#event-title")).to_contain_text(f"event {added[0]['id']}")
    link = page.get_by_role("link", name=f"Recording {recording_id} (Quiet room): its timeline, to mark a missed "
                                         "event")
    expect(link).to_have_attribute("href", f"index.html?recording={recording_id}")
    assert_accessible(page)


def test_a_clinician_events_clip_seeks_and_drives_the_timeline(ws: SimpleNamespace, page: Page) -> None:
    recording_id = copy_without_events(ws.app, ws.recording["id"], room="Seek room")
    added = httpx.post(f"{ws.base}/api/v1/recordings/{recording_id}/events", headers=ws.headers,
                       json={"label": "fall", "start": 10.0, "end": 14.0}).json()
    assert added["clip_url"] and added["clip_start"] is not None
    page.set_viewport_size({"width": 1366, "height": 768})
    page.goto(f"{ws.base}/index.html?recording={recording_id}")
    sign_in(page, "test-clinician")
    expect(page.locator("#event-title")).to_contain_text("no event selected")
    wait_until(page, "document.getElementById('timeline-range').textContent.length > 0")
    canvas = page.locator("#timeline-canvas")
    page.locator("#missed-form").scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None
    x_of = lambda t: t / ws.recording["duration"] * box["width"]  # noqa: E731
    canvas.click(position={"x": x_of(12.0), "y": box["height"] / 2})  # opens the event there
    expect(page.locator("#event-title")).to_contain_text(f"event {added['id']}")
    expect(page.locator("#overlay-state")).to_contain_text("the model has no explanation for it")
    wait_until(page, "Number.isFinite(document.getElementById('event-clip').duration)")
    page.locator("#missed-form").scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None
    canvas.click(position={"x": x_of(13.0), "y": box["height"] / 2})  # seeks the clip to recording time 13 s
    wait_until(page, f"Math.abs(document.getElementById('event-clip').currentTime + {added['clip_start']} - 13)"
                     f" < {ws.recording['duration'] / box['width'] * 2 + 0.2}")
    page.locator("#event-clip").evaluate("v => { v.currentTime = 1.0; }")
    wait_until(page, "!document.getElementById('event-clip').seeking")
    page.keyboard.press("[")  # the player's recording time: clip_start + 1 s
    assert abs(float(page.input_value("#missed-start")) - (added["clip_start"] + 1.0)) < 0.1
