"""The admin page in real Chromium: a clinician signed in through the page may look but not fine-tune (the page
shows the server's reason); an admin starts an ATCON fine-tune and watches it, the candidate is compared with
its base and activated, then rolled back."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from server.main import create_app
from server.settings import Settings
from tests.accounts import bearer, ensure_user
from tests.conftest import running_server
from tests.web.conftest import ARTIFACTS, sign_in, upload_and_score

pytestmark = pytest.mark.browser
HEADERS: dict[str, str] = {}  # an admin token for the test's own API calls, set by the fixture
TINY_EXTRA = {"batch_size": 4, "unlabelled_batch_size": 4, "alpha": 2, "eval_batch_size": 8}
FINISHED = re.compile(r"^(succeeded|failed|cancelled)$")
COMPARISON = re.compile(r"base (\d+\.\d) → candidate (\d+\.\d) \(([+-]\d+\.\d)\)")


@pytest.fixture
def live_server(tmp_path: Path, ward_video) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A scored recording with one confirmed and one rejected event, so a fine-tune has reviewed clips."""
    app = create_app(Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu"))
    with running_server(app) as base:
        clinician = bearer(app, "clinician")
        HEADERS.clear()
        HEADERS.update(bearer(app, "admin"))
        recording = upload_and_score(base, app, ward_video.video, clinician)
        events = httpx.get(f"{base}/api/v1/events", params={"recording": recording["id"]},
                           headers=clinician).json()["data"]
        assert len(events) >= 2
        for event, decision in zip(events, ("confirmed", "rejected"), strict=False):
            answer = httpx.post(f"{base}/api/v1/events/{event['id']}/review", json={"decision": decision},
                                headers=clinician)
            assert answer.status_code == 200, answer.text
        ensure_user(app, "admin")
        yield base
        with contextlib.suppress(Exception):
            app.state.dispatcher.wait(timeout=120)  # no training thread outlives the test


def _finetune_jobs(base: str) -> list[dict]:
    return httpx.get(f"{base}/api/v1/jobs", params={"kind": "finetune"}, headers=HEADERS).json()["data"]


def _eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    """Poll the API until ``check()``: a click starts the page's request, which completes after the click returns."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the API never showed the change"
        time.sleep(0.1)


def _models(base: str) -> dict[int, dict]:
    return {m["id"]: m for m in httpx.get(f"{base}/api/v1/models", headers=HEADERS).json()}


@pytest.mark.timeout(900)  # scoring the recording plus one tiny fine-tune on a busy CPU
def test_finetune_and_activate_from_the_admin_page(live_server: str, page: Page) -> None:
    (active,) = [m for m in _models(live_server).values() if m["state"] == "active"]
    page.goto(live_server)
    sign_in(page, "test-clinician")
    expect(page.get_by_role("link", name="Models & fine-tuning")).to_have_attribute("href", "models.html")
    page.goto(f"{live_server}/models.html")  # the session cookie carries over: no second sign-in
    expect(page.get_by_role("link", name="Event review")).to_have_attribute("href", "index.html")

    # a clinician sees the model versions but may neither see jobs nor fine-tune; the page says why
    expect(page.locator(f"#model-{active['id']}")).to_contain_text(active["name"])
    expect(page.locator("#jobs-count")).to_contain_text("403: the clinician role may not do this")
    page.get_by_label("Epochs").fill("1")
    page.locator("#ft-extra").fill(json.dumps(TINY_EXTRA))
    page.click("#ft-submit")
    expect(page.locator("#finetune-status")).to_contain_text("403: the clinician role may not do this")
    assert _finetune_jobs(live_server) == []
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, "test-admin")

    active_row = page.locator(f"#model-{active['id']}")
    expect(active_row).to_contain_text(active["name"])
    expect(active_row).to_contain_text(active["architecture"])
    expect(active_row.locator(".state-badge")).to_have_text("active")
    expect(active_row.get_by_role("button")).to_have_count(0)  # nothing to activate on the active version
    expect(page.locator(".model-row")).to_have_count(1)
    expect(page.locator("#jobs-count")).to_have_text("No fine-tune jobs yet.")
    expect(page.get_by_label("Base model")).to_have_value(str(active["id"]))
    expect(page.get_by_label("Mode", exact=True)).to_have_value("alternating")
    expect(page.get_by_label("Epochs")).to_have_value("5")
    expect(page.get_by_label("Learning rate")).to_have_value("1e-5")

    # invalid JSON: an inline message next to the field, nothing is sent
    page.get_by_label("Epochs").fill("1")
    page.get_by_label("Learning rate").fill("1e-4")
    extra = page.locator("#ft-extra")
    extra.fill('{"batch_size": 4,')
    page.click("#ft-submit")
    expect(page.locator("#ft-extra-error")).to_contain_text("not valid JSON")
    expect(extra).to_have_attribute("aria-invalid", "true")
    assert _finetune_jobs(live_server) == []

    # an unknown hyper-parameter is refused with the server's 422 detail
    status = page.locator("#finetune-status")
    extra.fill(json.dumps({**TINY_EXTRA, "epochz": 1}))
    page.click("#ft-submit")
    expect(page.locator("#ft-extra-error")).to_have_text("")
    expect(status).to_contain_text("422")
    expect(status).to_contain_text("epochz")
    assert _finetune_jobs(live_server) == []

    # a real (tiny) fine-tune, plus a second job queued behind it and cancelled from the page
    extra.fill(json.dumps(TINY_EXTRA))
    page.click("#ft-submit")
    expect(status).to_contain_text("queued")
    (job,) = _finetune_jobs(live_server)
    assert job["params"]["hyperparameters"] == {**TINY_EXTRA, "epochs": 1, "lr": 1e-4}
    assert job["params"]["mode"] == "alternating" and job["params"]["base_model_id"] == active["id"]
    item = page.locator(f'#job-list .job[data-id="{job["id"]}"]')
    expect(item).to_contain_text(f"Job {job['id']}")
    expect(item.locator("progress")).to_be_visible()

    page.click("#ft-submit")
    expect(page.locator("#job-list .job")).to_have_count(2)
    second = max(j["id"] for j in _finetune_jobs(live_server))
    second_item = page.locator(f'#job-list .job[data-id="{second}"]')
    expect(page.locator("#job-list .job").first).to_have_attribute("data-id", str(second))  # newest first
    second_item.get_by_role("button", name=f"Cancel job {second}").click()
    expect(second_item).to_have_attribute("data-status", "cancelled")
    expect(page.locator("#jobs-status")).to_have_text(f"Job {second} cancelled.")
    expect(second_item.get_by_role("button", name=f"Cancel job {second}")).to_be_hidden()

    expect(item).to_have_attribute("data-status", FINISHED, timeout=300_000)
    assert item.get_attribute("data-status") == "succeeded", item.inner_text()
    expect(item.locator(".job-status")).to_have_text("succeeded")
    expect(item.locator(".job-metrics")).to_contain_text("epoch 1/1")
    expect(item.locator(".job-metrics")).to_contain_text("loss")
    expect(item.locator("progress")).to_have_js_property("value", 1)
    expect(item.get_by_role("button", name=f"Cancel job {job['id']}")).to_be_hidden()

    done = httpx.get(f"{live_server}/api/v1/jobs/{job['id']}", headers=HEADERS).json()
    candidate_id = done["result"]["model_version_id"]
    candidate = _models(live_server)[candidate_id]
    assert candidate["state"] == "candidate" and candidate["parent_id"] == active["id"]
    expect(item.get_by_role("link", name=f"candidate {candidate['name']}")).to_have_attribute(
        "href", f"#model-{candidate_id}")

    # the models table was refreshed: the new candidate is highlighted with its side-by-side comparison
    row = page.locator(f"#model-{candidate_id}")
    expect(row).to_have_class(re.compile(r"\bhighlight\b"))
    expect(row.locator(".state-badge")).to_have_text("candidate")
    expect(row).to_contain_text(f"fine-tuned from {active['name']}")
    comparison = candidate["metrics"]["comparison"]
    text = row.locator(".comparison-base").inner_text()
    found = COMPARISON.fullmatch(text)
    assert found, text
    for shown, value in zip(found.groups(), (comparison["base"]["macro_f1"], comparison["candidate"]["macro_f1"],
                                             comparison["diff_macro_f1"]), strict=True):
        assert abs(float(shown) - 100 * value) <= 0.051, (text, comparison)
    val_f1 = candidate["metrics"]["val_macro_f1"]
    assert abs(float(row.locator(".val-f1").inner_text()) - 100 * val_f1) <= 0.051
    expect(page.locator(".model-row")).to_have_count(2)

    # promote the candidate
    activate = row.get_by_role("button", name=f"Activate {candidate['name']}")
    models_status = page.locator("#models-status")
    activate.click()
    expect(row.locator(".state-badge")).to_have_text("active")
    expect(models_status).to_contain_text(f"Activated {candidate['name']} ({active['name']} retired)")
    expect(active_row.locator(".state-badge")).to_have_text("retired")
    expect(active_row.get_by_role("button")).to_have_text("Roll back to this")
    _eventually(lambda: _models(live_server)[candidate_id]["state"] == "active")
    assert _models(live_server)[active["id"]]["state"] == "retired"

    # fine-tuning the now retired original: its candidate is compared with the base and with the active model
    page.get_by_label("Base model").select_option(str(active["id"]))
    page.click("#ft-submit")
    expect(page.locator("#job-list .job")).to_have_count(3)
    third = page.locator("#job-list .job").first
    expect(third).to_have_attribute("data-status", FINISHED, timeout=300_000)
    assert third.get_attribute("data-status") == "succeeded", third.inner_text()
    newest = httpx.get(f"{live_server}/api/v1/jobs/{third.get_attribute('data-id')}", headers=HEADERS).json()
    assert newest["params"]["base_model_id"] == active["id"]
    other = page.locator(f"#model-{newest['result']['model_version_id']}")
    expect(other).to_have_class(re.compile(r"\bhighlight\b"))
    expect(row).not_to_have_class(re.compile(r"\bhighlight\b"))
    expect(other.locator(".comparison-base")).to_have_text(COMPARISON)
    expect(other.locator(".comparison-active")).to_have_text(re.compile(
        r"^active \d+\.\d → candidate \d+\.\d \([+-]\d+\.\d\)$"))
    expect(other.locator(".comparison-active")).to_have_attribute("title", f"active when trained: {candidate['name']}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "models.png"), full_page=True)

    # the session survives a reload (no second sign-in); rolling back restores the original version
    page.reload()
    expect(page.locator("#user-name")).to_contain_text("test-admin")
    expect(page.locator("#signin")).to_be_hidden()
    active_row.get_by_role("button", name=f"Roll back to {active['name']}").click()
    expect(active_row.locator(".state-badge")).to_have_text("active")
    expect(models_status).to_contain_text(f"Rolled back to {active['name']}")
    expect(row.locator(".state-badge")).to_have_text("retired")
    _eventually(lambda: _models(live_server)[active["id"]]["state"] == "active")
