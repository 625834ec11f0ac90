"""The clinician's review workspace in real Chromium, against one real server per module with a synthetic
recording scored by the real pipeline: keyboard-only triage of 20 events checked in the database after each
decision (timed), the explanation drawn on the review clip (methods, opacity, side by side: the canvas pixels
change), the recording timeline (seek, zoom) and marking a missed event by dragging on it (found in the API,
the queue and the fine-tune training set), undo."""

from __future__ import annotations

import math
import re
import time
from types import SimpleNamespace

import httpx
import pytest
from playwright.sync_api import Page, expect

from server.db.session import session_scope
from server.db.tables import ModelState, ModelVersion
from server.training_data import build_finetune_data
from tests.web.a11y import assert_accessible
from tests.web.conftest import ARTIFACTS, sign_in, wait_until
from tests.web.workspace import (
    DOCS_SCREENSHOTS,
    canvas_digest,
    event_row,
    eventually,
    filter_room,
    open_event,
    seed_events,
)

pytestmark = pytest.mark.browser


def test_review_20_events_by_keyboard_only(ws: SimpleNamespace, page: Page) -> None:
    ids = seed_events(ws.app, room="Bay 4 bed 2", count=21, gaps=[(500.0, 530.0)])
    page.goto(ws.base)
    sign_in(page, "test-clinician")
    filter_room(page, "Bay 4 bed 2")
    expect(page.locator(".event-item")).to_have_count(21)
    expect(page.locator("#status-counts")).to_contain_text("to review 21")
    listed = [int(i) for i in page.locator(".event-item").evaluate_all("items => items.map(i => i.dataset.id)")]
    assert listed == ids  # newest first
    order, fresh = listed[:20], listed[20]

    decisions = ["confirmed", "rejected", "relabelled"]
    began = time.perf_counter()
    for n, event_id in enumerate(order):
        page.keyboard.press("j")
        expect(page.locator("#event-title")).to_contain_text(f"event {event_id}")
        if n == 0:  # the recording's timeline: its 21 events and its stream outage
            expect(page.locator("#timeline-canvas")).to_have_attribute(
                "aria-label", re.compile(r"0:00 to 10:00: 21 events, 1 stream gap$"))
        decision = decisions[n % 3]
        if decision == "relabelled":
            page.keyboard.press("e")
            expect(page.locator("#relabel-label")).to_be_focused()
            page.keyboard.press("ArrowDown")  # the next class in the list
            new_label = page.locator("#relabel-label").input_value()
            page.keyboard.press("Enter")
        else:
            page.keyboard.press("c" if decision == "confirmed" else "r")
        expect(page.locator("#review-status")).to_have_text(f"Saved: {decision}")
        row = eventually(lambda e=event_id, d=decision: (r := event_row(ws.app, e)) and r["status"] == d and r)
        assert row["reviewer"] == "test-clinician"
        if decision == "relabelled":
            assert row["reviewed_label"] == new_label != row["label"]
    elapsed = time.perf_counter() - began
    print(f"\nkeyboard-only review of 20 events: {elapsed:.1f} s ({elapsed / 20:.2f} s per event)")
    assert elapsed < 120  # generous: a human-speed bound, not a benchmark
    expect(page.locator("#status-counts")).to_contain_text("to review 1")

    # u on the next, unreviewed event: back to the latest decision and undo it (flagged in the database)
    page.keyboard.press("j")
    expect(page.locator("#event-title")).to_contain_text(f"event {fresh}")
    page.keyboard.press("u")
    expect(page.locator("#event-title")).to_contain_text(f"event {order[-1]}")
    expect(page.locator("#review-status")).to_have_text("Undone: now flagged")
    assert eventually(lambda: event_row(ws.app, order[-1])["status"] == "flagged")
    assert event_row(ws.app, fresh)["status"] == "flagged"
    expect(page.locator("#status-counts")).to_contain_text("to review 2")
    page.keyboard.press("k")
    expect(page.locator("#event-title")).to_contain_text(f"event {order[-2]}")
    page.keyboard.press("u")  # u on an event with my review: that one
    expect(page.locator("#review-status")).to_have_text("Undone: now flagged")
    assert eventually(lambda: event_row(ws.app, order[-2])["status"] == "flagged")

    # ?: the shortcuts dialog, from the same table as the keys; Escape closes it
    page.keyboard.press("?")
    expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()
    expect(page.locator("#help-list")).to_contain_text("undo my review")
    assert_accessible(page)
    page.keyboard.press("Escape")
    expect(page.locator("#help-dialog")).to_be_hidden()
    # keys do nothing while typing: a "c" in the note is a letter, not a decision
    before = event_row(ws.app, order[-2])
    page.focus("#review-note")
    page.keyboard.type("c")
    assert page.locator("#review-note").input_value().endswith("c")
    page.wait_for_timeout(300)
    assert event_row(ws.app, order[-2]) == before


def test_explanation_drawn_on_the_playing_clip(ws: SimpleNamespace, page: Page) -> None:
    event = ws.events[0]
    assert event["clip_start"] is not None
    maps = httpx.get(f"{ws.base}/api/v1/events/{event['id']}/maps", headers=ws.headers).json()
    open_event(page, ws, event["id"])
    expect(page.locator("#overlay-state")).to_have_text("Grad-CAM drawn on the video")
    wait_until(page, "document.getElementById('event-clip').readyState >= 2")
    # a moment the maps cover (the clip's padding before them has no map, so nothing is drawn there)
    inside = maps["times"][len(maps["times"]) // 2] - event["clip_start"]
    page.evaluate(f"() => {{ document.getElementById('event-clip').currentTime = {max(0.0, inside)}; }}")
    wait_until(page, "!document.getElementById('event-clip').seeking")
    page.wait_for_timeout(100)
    grad_cam = canvas_digest(page)
    assert grad_cam[1] > 0, "nothing drawn over the video"
    assert_accessible(page)

    page.keyboard.press("o")
    expect(page.locator("#method-guided_backprop")).to_be_checked()
    guided = canvas_digest(page)
    assert guided != grad_cam
    page.keyboard.press("o")
    expect(page.locator("#method-guided_grad_cam")).to_be_checked()
    assert canvas_digest(page) not in (grad_cam, guided)
    page.keyboard.press("o")
    expect(page.locator("#overlay-state")).to_have_text("No overlay")
    assert canvas_digest(page)[1] == 0  # the bare video
    page.get_by_label("Grad-CAM", exact=True).check()
    assert canvas_digest(page) == grad_cam

    # opacity, by keyboard on the slider: none at 0 %, stronger at 100 %
    page.focus("#overlay-opacity")
    page.keyboard.press("Home")
    expect(page.locator("#opacity-value")).to_have_text("0%")
    assert canvas_digest(page)[1] == 0
    page.keyboard.press("End")
    expect(page.locator("#opacity-value")).to_have_text("100%")
    strong = canvas_digest(page)
    assert strong[0] > grad_cam[0]
    page.locator("#overlay-opacity").blur()

    # synchronised to the player: the first and the last map frame at their own moments; at the clip's 0 s and
    # end, the nearest frame, or none where the clip's padding lies more than a frame step outside the maps
    times = maps["times"]
    if len(times) > 1:
        step = sorted(b - a for a, b in zip(times, times[1:], strict=False))[(len(times) - 1) // 2]
        t0 = event["clip_start"]
        duration = page.evaluate("document.getElementById('event-clip').duration")
        seen = {}
        for at in (0.0, times[0] - t0 + 0.01, times[-1] - t0 - 0.01, duration - 0.05):
            page.evaluate(f"() => {{ document.getElementById('event-clip').currentTime = {max(0.0, at)}; }}")
            wait_until(page, "!document.getElementById('event-clip').seeking")
            page.wait_for_timeout(100)
            seen[at] = (page.locator("#overlay-canvas").get_attribute("data-frame"), canvas_digest(page)[1])
        for at, (frame, drawn) in seen.items():
            t = t0 + max(0.0, at)
            if t < times[0] - step or t > times[-1] + step:
                assert frame == "" and drawn == 0, (at, t, times[0], times[-1], step)
            else:
                assert frame == str(min(range(len(times)), key=lambda i: abs(times[i] - t))) and drawn, (at, frame)
        assert len({frame for frame, _ in seen.values()}) > 1, seen

    # space plays and pauses; the overlay follows the playing video
    page.keyboard.press(" ")
    wait_until(page, "!document.getElementById('event-clip').paused")
    page.keyboard.press(" ")
    wait_until(page, "document.getElementById('event-clip').paused")

    page.locator("#event-clip").evaluate("v => { v.currentTime = v.duration / 2; }")
    wait_until(page, "!document.getElementById('event-clip').seeking")
    page.wait_for_timeout(150)
    DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#event-detail").screenshot(path=str(DOCS_SCREENSHOTS / "event-overlay.png"))
    page.screenshot(path=str(ARTIFACTS / "workspace-event-overlay.png"), full_page=True)

    page.focus("#side-by-side")
    page.keyboard.press(" ")  # space on a focused checkbox toggles it (it does not play the clip)
    expect(page.get_by_label("Side by side")).to_be_checked()
    assert page.evaluate("document.getElementById('event-clip').paused")
    page.keyboard.press("o")  # a shortcut still works from the checkbox: Grad-CAM → Guided Backprop
    expect(page.locator("#method-guided_backprop")).to_be_checked()
    page.get_by_label("Grad-CAM", exact=True).check()
    wait_until(page, "getComputedStyle(document.getElementById('overlay-canvas')).position === 'static'")
    page.wait_for_timeout(100)
    side = canvas_digest(page)
    assert side[1] == side[2] * side[3], "side by side: the video frame under the map, every pixel opaque"
    assert_accessible(page)
    page.screenshot(path=str(ARTIFACTS / "workspace-side-by-side.png"), full_page=True)


FRAME_AT = """async () => {
  const { frameAt } = await import("/overlay.js");
  const { formatTime } = await import("/score-plot.js");
  const times = [10, 10.1, 10.2, 10.3];
  return { frames: [9.85, 9.92, 10, 10.16, 10.3, 10.38, 10.45, 20].map((t) => frameAt(times, t)),
           lone: [frameAt([5], 4.6), frameAt([5], 4.4)], empty: frameAt([], 1),
           times: [59.96, 59.94, 0, 9.95, 3599.97, 61].map(formatTime) };
}"""


def test_overlay_frame_choice_and_time_format_in_the_page(ws: SimpleNamespace, page: Page) -> None:
    """The modules as the page loads them: no map frame outside the maps' span (plus one step), and times
    rounded before they are split into minutes and seconds."""
    page.goto(ws.base)
    got = page.evaluate(FRAME_AT)
    assert got["frames"] == [-1, 0, 0, 2, 3, 3, -1, -1]
    assert got["lone"] == [0, -1] and got["empty"] == -1
    assert got["times"] == ["1:00", "0:59.9", "0:00", "0:10", "1:00:00", "1:01"]


def test_mark_a_missed_event_on_the_timeline(ws: SimpleNamespace, page: Page) -> None:
    recording = ws.recording
    event = ws.events[0]
    open_event(page, ws, event["id"])
    timeline = httpx.get(f"{ws.base}/api/v1/recordings/{recording['id']}/timeline", headers=ws.headers).json()
    duration = timeline["duration"]
    wait_until(page, "document.getElementById('timeline-range').textContent.length > 0")
    canvas = page.locator("#timeline-canvas")
    page.locator("#missed-form").scroll_into_view_if_needed()  # the mouse acts inside the viewport only
    box = canvas.bounding_box()
    assert box is not None
    x_of = lambda t: box["x"] + t / duration * box["width"]  # noqa: E731 - the whole recording is shown

    # a click inside the event's clip seeks the player to that recording time
    wait_until(page, "Number.isFinite(document.getElementById('event-clip').duration)")
    target = event["start"] + 0.5
    page.mouse.click(x_of(target), box["y"] + box["height"] / 3)
    wait_until(page, f"Math.abs(document.getElementById('event-clip').currentTime + {event['clip_start']} "
                     f"- {target}) < {duration / box['width'] * 2 + 0.2}")

    # zoom with the buttons and the wheel
    whole = page.locator("#timeline-range").inner_text()
    page.get_by_role("button", name="Zoom in").click()
    expect(page.locator("#timeline-range")).not_to_have_text(whole)
    page.get_by_role("button", name="Whole recording").click()
    expect(page.locator("#timeline-range")).to_have_text(whole)
    page.mouse.move(x_of(duration / 2), box["y"] + box["height"] / 3)
    page.mouse.wheel(0, -300)
    expect(page.locator("#timeline-range")).not_to_have_text(whole)
    page.get_by_role("button", name="Whole recording").click()
    expect(page.locator("#timeline-range")).to_have_text(whole)
    page.wait_for_timeout(200)

    # drag across a stretch with no event: the range is the missed event's
    busy = sorted((e["start"], e["end"]) for e in timeline["events"])
    edges = [0.0, *[t for pair in busy for t in pair], duration]
    free = max(((edges[i], edges[i + 1]) for i in range(0, len(edges), 2)), key=lambda p: p[1] - p[0])
    assert free[1] - free[0] > 3, f"no free stretch in {busy}"
    a, b = free[0] + (free[1] - free[0]) * 0.25, free[0] + (free[1] - free[0]) * 0.75
    y = box["y"] + box["height"] / 2
    page.mouse.move(x_of(a), y)
    page.mouse.down()
    page.mouse.move(x_of((a + b) / 2), y, steps=4)
    page.mouse.move(x_of(b), y, steps=4)
    page.mouse.up()
    tolerance = duration / box["width"] * 3
    assert abs(float(page.input_value("#missed-start")) - a) < tolerance
    assert abs(float(page.input_value("#missed-end")) - b) < tolerance
    label = timeline["classes"][0]
    page.select_option("#missed-label", label)
    page.fill("#missed-note", "patient slid off the chair, model missed it")
    page.screenshot(path=str(ARTIFACTS / "workspace-timeline-selection.png"), full_page=True)
    DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#timeline").screenshot(path=str(DOCS_SCREENSHOTS / "timeline.png"))
    assert_accessible(page)
    page.get_by_role("button", name="Save missed event").click()
    expect(page.locator("#missed-status")).to_contain_text("Saved as event")

    added = httpx.get(f"{ws.base}/api/v1/events", params={"recording": recording["id"], "source": "clinician"},
                      headers=ws.headers).json()["data"]
    assert len(added) == 1
    missed = added[0]
    assert (missed["label"], missed["status"], missed["source"]) == (label, "confirmed", "clinician")
    assert missed["reviewer"] == "test-clinician"
    assert abs(missed["start"] - a) < tolerance and abs(missed["end"] - b) < tolerance
    # it appears in the queue (all statuses) and on the timeline
    page.select_option("#filter-status", "")
    added_item = page.locator(f'.event-item[data-id="{missed["id"]}"]')
    expect(added_item).to_contain_text("(added)")
    added_item.click()
    expect(page.locator("#event-facts")).to_contain_text("added by a clinician")
    expect(page.locator("#overlay-state")).to_contain_text("the model has no explanation for it")
    assert_accessible(page)
    page.locator(f'.event-item[data-id="{event["id"]}"]').click()
    expect(page.locator("#event-title")).to_contain_text(f"event {event['id']}")
    wait_until(page, "Number.isFinite(document.getElementById('event-clip').duration)")

    # the fine-tune job's training set has it as a positive example of its label
    with session_scope(ws.app.state.session_factory) as session:
        base = session.query(ModelVersion).filter(ModelVersion.state == ModelState.active).one()
        data = build_finetune_data(session=session, data_dir=ws.app.state.settings.data_dir, base=base,
                                   mode="supervised", recording_ids=[recording["id"]])
        index = list(base.class_names).index(label)
    positives = [c for c in data.labelled + data.validation
                 if c.times[0] < missed["end"] and missed["start"] < c.times[-1] and c.labels[index] == 1.0]
    assert positives, "the missed event is not a positive example of the fine-tune data"

    # marking by keys at the player's time: [ then ] after moving on in the clip
    page.keyboard.press("Escape")
    page.locator("#missed-note").blur()
    page.locator("#event-clip").evaluate("v => { v.currentTime = 0.2; }")
    wait_until(page, "!document.getElementById('event-clip').seeking")
    page.keyboard.press("[")
    page.locator("#event-clip").evaluate("v => { v.currentTime = v.duration - 0.2; }")
    wait_until(page, "!document.getElementById('event-clip').seeking")
    page.keyboard.press("]")
    start, end = float(page.input_value("#missed-start")), float(page.input_value("#missed-end"))
    assert math.isclose(start, event["clip_start"] + 0.2, abs_tol=0.1) and end > start
