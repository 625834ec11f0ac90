"""The admin's fine-tune job page in real Chromium: an admin starts a tiny two-epoch fine-tune from the page and
watches it to 100 %; the loss and validation-F1 charts draw exactly the job's recorded curves (mapped back from
the SVG geometry), the per-epoch figures match the trainer's history, and the candidate's per-class F1 is shown
beside its base's. Writes docs/screenshots/admin-finetune.png."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from server.main import create_app
from server.settings import Settings
from tests.accounts import bearer, ensure_user
from tests.conftest import running_server
from tests.web.a11y import assert_accessible
from tests.web.conftest import ARTIFACTS, sign_in, upload_and_score

pytestmark = pytest.mark.browser
HEADERS: dict[str, str] = {}
TINY_EXTRA = {"batch_size": 4, "unlabelled_batch_size": 4, "alpha": 2, "eval_batch_size": 8}
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "admin-finetune.png"


@pytest.fixture
def live_server(tmp_path: Path, ward_video) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A scored recording with reviewed events, so a fine-tune has labelled clips."""
    app = create_app(Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu"))
    with running_server(app) as base:
        clinician = bearer(app, "clinician")
        HEADERS.clear()
        HEADERS.update(bearer(app, "admin"))
        recording = upload_and_score(base, app, ward_video.video, clinician)
        events = httpx.get(f"{base}/api/v1/events", params={"recording": recording["id"]},
                           headers=clinician).json()["data"]
        for event, decision in zip(events, ("confirmed", "rejected", "confirmed"), strict=False):
            answer = httpx.post(f"{base}/api/v1/events/{event['id']}/review", json={"decision": decision},
                                headers=clinician)
            assert answer.status_code == 200, answer.text
        ensure_user(app, "admin")
        yield base
        with contextlib.suppress(Exception):
            app.state.dispatcher.wait(timeout=120)


def _chart_points(chart: Locator, selector: str) -> list[tuple[float, float]]:
    """The drawn (x, y) pixel positions of a series mapped back to data values through the chart's domain."""
    box = chart.evaluate("""svg => ({x0: +svg.dataset.x0, x1: +svg.dataset.x1, y0: +svg.dataset.y0,
        y1: +svg.dataset.y1, left: +svg.dataset.left, right: +svg.dataset.right, top: +svg.dataset.top,
        bottom: +svg.dataset.bottom})""")
    pixels = chart.locator(selector).evaluate_all("""nodes => nodes.flatMap(n => {
        if (n.tagName === "polyline") return n.getAttribute("points").split(" ").map(p => p.split(",").map(Number));
        if (n.tagName === "circle") return [[+n.getAttribute("cx"), +n.getAttribute("cy")]];
        return [[+n.getAttribute("x") + 3, +n.getAttribute("y") + 3]];
    })""")

    def value(px: float, py: float) -> tuple[float, float]:
        x = box["x0"] + (px - box["left"]) / (box["right"] - box["left"]) * (box["x1"] - box["x0"])
        y = box["y0"] + (box["bottom"] - py) / (box["bottom"] - box["top"]) * (box["y1"] - box["y0"])
        return x, y

    return [value(px, py) for px, py in pixels]


def _close(drawn: list[tuple[float, float]], expected: list[tuple[float, float]], chart: Locator) -> None:
    """Equal within the 0.01 px the chart rounds to, expressed in data units."""
    box = chart.evaluate("svg => [+svg.dataset.x1 - +svg.dataset.x0, +svg.dataset.y1 - +svg.dataset.y0]")
    tol_x, tol_y = box[0] / 250 * 0.011, box[1] / 100 * 0.011
    assert len(drawn) == len(expected), (drawn, expected)
    for (dx, dy), (ex, ey) in zip(drawn, expected, strict=True):
        assert math.isclose(dx, ex, abs_tol=tol_x) and math.isclose(dy, ey, abs_tol=tol_y), (drawn, expected)


@pytest.mark.timeout(900)
def test_finetune_curves_and_per_class_comparison(live_server: str, page: Page) -> None:
    page.set_viewport_size({"width": 1366, "height": 768})
    page.goto(f"{live_server}/models.html")
    sign_in(page, "test-admin")
    expect(page.locator("#site-nav a[aria-current=page]")).to_have_text("Models & fine-tuning")
    expect(page.locator("#jobs-count")).to_have_text("No fine-tune jobs yet.")
    assert_accessible(page)

    page.get_by_label("Epochs").fill("2")
    page.get_by_label("Learning rate").fill("1e-4")
    page.locator("#ft-extra").fill(json.dumps(TINY_EXTRA))
    page.click("#ft-submit")
    item = page.locator("#job-list .job").first
    expect(item).to_be_visible()
    # watch the job as the page polls it: progress never goes back, the drawn step-loss line only grows
    seen: list[tuple[float, int]] = []
    deadline = time.monotonic() + 600
    while item.get_attribute("data-status") in ("queued", "running"):
        assert time.monotonic() < deadline, "the fine-tune never finished"
        seen.append(item.evaluate("""li => [li.querySelector("progress").value,
            (li.querySelector("polyline.series-step_loss")?.getAttribute("points") || "").split(" ")
                .filter(Boolean).length]"""))
        page.wait_for_timeout(200)
    expect(item).to_have_attribute("data-status", "succeeded")
    assert seen == sorted(seen, key=lambda s: s[0]) and [n for _, n in seen] == sorted(n for _, n in seen), seen
    expect(item.locator("progress")).to_have_js_property("value", 1)
    expect(item.locator(".job-progress")).to_contain_text("100%")
    job = httpx.get(f"{live_server}/api/v1/jobs/{item.get_attribute('data-id')}", headers=HEADERS).json()
    curves, history = job["result"]["curves"], job["result"]["history"]
    assert len(curves["epochs"]) == 2 and len(curves["steps"]) >= 2, curves

    # the charts show the job's recorded curves, point for point
    charts = item.locator(".job-curves svg.chart")
    expect(charts).to_have_count(2)
    loss, f1 = charts.nth(0), charts.nth(1)
    expect(loss).to_have_attribute("aria-label", f"Job {job['id']} loss over {curves['epochs'][-1]['step']} steps, "
                                                 f"latest {curves['epochs'][-1]['loss']:.3f}")
    _close(_chart_points(loss, "polyline.series-step_loss"), [tuple(p) for p in curves["steps"]], loss)
    _close(_chart_points(loss, ".series-epoch_loss circle"), [(e["step"], e["loss"]) for e in curves["epochs"]], loss)
    _close(_chart_points(loss, ".series-val_loss rect"), [(e["step"], e["val_loss"]) for e in curves["epochs"]], loss)
    _close(_chart_points(f1, ".series-val_f1 circle"), [(h["epoch"] + 1, h["val_macro_f1"]) for h in history], f1)
    _close(_chart_points(f1, "polyline.series-val_f1-line"),
           [(h["epoch"] + 1, h["val_macro_f1"]) for h in history], f1)

    # the per-epoch figures, for screen readers and anyone who wants the numbers
    item.get_by_text(f"Figures for job {job['id']}").click()
    rows = item.locator(".curve-table tr")
    expect(rows).to_have_count(1 + len(history))
    for i, row in enumerate(history):
        cells = rows.nth(i + 1).locator("td")
        expect(cells.nth(0)).to_have_text(str(row["epoch"] + 1))
        expect(cells.nth(2)).to_have_text(f"{row['loss']:.3f}")
        expect(cells.nth(3)).to_have_text(f"{row['val_loss']:.3f}")
        expect(cells.nth(4)).to_have_text(f"{row['val_macro_f1'] * 100:.1f}")

    # the candidate beside its base, class by class, on the same validation clips
    candidate_id = job["result"]["model_version_id"]
    candidate = {m["id"]: m for m in httpx.get(f"{live_server}/api/v1/models", headers=HEADERS).json()}[candidate_id]
    comparison = candidate["metrics"]["comparison"]
    base_f1, cand_f1 = comparison["base"]["per_class_f1"], comparison["candidate"]["per_class_f1"]
    assert set(base_f1) == set(cand_f1) and len(cand_f1) >= 2
    row = page.locator(f"#model-{candidate_id}")
    row.locator("summary", has_text="Per class").click()
    table = row.locator("table.per-class")
    expect(table).to_be_visible()
    expect(table.locator("tr").first).to_contain_text("Base (")
    def pts(value: float | None) -> str:  # a class without positives in the validation clips has no F1
        return "—" if value is None else f"{value * 100:.1f}"

    assert any(v is not None for v in cand_f1.values())
    for name, value in cand_f1.items():
        line = table.locator(f'tr[data-class="{name}"]')
        expect(line.locator(".base")).to_have_text(pts(base_f1[name]))
        expect(line.locator(".candidate")).to_have_text(pts(value))
        if value is None or base_f1[name] is None:
            expect(line.locator(".diff")).to_have_text("—")
        else:
            diff = round((value - base_f1[name]) * 1000) / 10
            expect(line.locator(".diff")).to_have_text(f"{'+' if diff >= 0 else '-'}{abs(diff):.1f}")
    assert_accessible(page)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("#jobs").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "admin-finetune.png"), full_page=True)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.set_viewport_size({"width": 1024, "height": 768})
    assert_accessible(page)
    page.screenshot(path=str(ARTIFACTS / "admin-finetune-1024.png"), full_page=True)
