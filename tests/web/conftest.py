"""Browser fixtures: Debian chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.accounts import PASSWORD

CHROMIUM = os.environ.get("WARDWATCH_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("WARDWATCH_TEST_ARTIFACTS", "/tmp/wardwatch-test-artifacts"))
# Without the background-networking flags Chromium keeps trying this closed network's hosts.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                 "--no-first-run", "--disable-component-update", "--disable-sync"]


# Runs in every document before the page's own scripts: each Content-Security-Policy violation the browser
# reports (a blocked inline script or style, a resource from elsewhere) is handed to the test.
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.__reportCspViolation(`${e.effectiveDirective} blocked ${e.blockedURI || "inline"} at ${e.documentURI}`
    + (e.sample ? ` (${e.sample})` : ""));
});
"""


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, ward_video) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """A review-workspace server (tests/web/workspace.py) shared by the tests of one module."""
    from tests.web.workspace import workspace_server

    yield from workspace_server(tmp_path_factory, ward_video)


@pytest.fixture
def csp_violations() -> list[str]:
    """The CSP violations the browser reported during the test (events and console messages)."""
    return []


@pytest.fixture
def page(csp_violations: list[str]) -> Iterator[Page]:
    """A Chromium page with the server's CSP in force (never bypassed); after the test, no page may have
    reported a CSP violation."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            new = browser.new_page(viewport={"width": 1280, "height": 900}, bypass_csp=False)
            new.expose_function("__reportCspViolation", lambda text: csp_violations.append(text))
            new.add_init_script(REPORT_CSP_VIOLATIONS)
            new.on("console", lambda message: csp_violations.append(message.text)
                   if "Content Security Policy" in message.text else None)
            yield new
            assert not csp_violations, f"the browser reported CSP violations: {csp_violations}"
        finally:
            browser.close()


def upload_and_score(base: str, app: Any, video: Path, headers: dict[str, str]) -> dict:
    """Upload ``video`` through the REST API (as the token in ``headers``) and wait until it is scored."""
    with video.open("rb") as handle:
        recording = httpx.post(f"{base}/api/v1/recordings", files={"file": ("ward.mp4", handle)}, timeout=60,
                               headers=headers).json()
    app.state.dispatcher.wait(timeout=240)
    scored = httpx.get(f"{base}/api/v1/recordings/{recording['id']}", headers=headers).json()
    assert scored["status"] == "scored", scored
    return scored


def wait_until(page: Page, expression: str, timeout: float = 20.0) -> None:
    """Poll a JavaScript expression until it is true.

    Not ``page.wait_for_function``: Playwright compiles its predicate with ``eval`` inside the page, which the
    pages' Content-Security-Policy (no ``unsafe-eval``) rightly refuses. ``page.evaluate`` goes through the
    DevTools protocol, which the policy does not govern.
    """
    import time

    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {expression}")
        page.wait_for_timeout(100)


def sign_in(page: Page, username: str, password: str = PASSWORD) -> None:
    """Sign in through the page's real form, as a person would."""
    expect(page.get_by_role("heading", name="Sign in to Wardwatch")).to_be_visible()
    page.get_by_label("Username", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin")).to_be_hidden()
    expect(page.locator("#user-name")).to_contain_text(username)
