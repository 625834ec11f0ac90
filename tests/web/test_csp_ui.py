"""Every page under the server's real Content-Security-Policy in Chromium: they load, sign in and render with
no violation reported, the headers reach the browser, and the violation detector of the ``page`` fixture (which
every browser test uses) really catches an inline script."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from server.api.hardening import CSP
from server.main import create_app
from server.settings import Settings
from tests.accounts import ensure_user
from tests.conftest import running_server
from tests.web.conftest import sign_in

pytestmark = pytest.mark.browser


@pytest.fixture
def base(tmp_path: Path) -> Iterator[str]:
    app = create_app(Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu"))
    with running_server(app) as url:
        ensure_user(app, "admin")
        yield url


def test_pages_work_under_the_csp(base: str, page: Page, csp_violations: list[str]) -> None:
    response = page.goto(base)
    assert response is not None
    headers = response.all_headers()
    assert headers["content-security-policy"] == CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    sign_in(page, "test-admin")
    expect(page.locator("#queue-count")).to_contain_text("0 event")
    page.get_by_role("link", name="Models & fine-tuning").click()
    expect(page.locator("#model-rows tr")).not_to_have_count(0)
    expect(page.locator("#ft-base option")).not_to_have_count(0)
    for link, ready in (("Recordings", "#recordings-count"), ("Users & tokens", "#user-rows tr"),
                        ("Audit trail", "#audit-rows tr")):  # the admin pages, through the shared nav
        page.locator("#site-nav").get_by_role("link", name=link, exact=True).click()
        expect(page.locator("#site-nav a[aria-current=page]")).to_have_text(link)
        expect(page.locator(ready).first).to_be_visible()
    page.get_by_role("link", name="Event review").click()
    expect(page.locator("#queue-count")).to_contain_text("0 event")
    assert csp_violations == []


def test_the_violation_detector_catches_an_inline_script(base: str, page: Page, csp_violations: list[str]) -> None:
    page.goto(base)
    page.evaluate("""() => {
        const script = document.createElement("script");
        script.textContent = "window.__ranInline = true";
        document.body.append(script);
        const styled = document.createElement("div");
        styled.setAttribute("style", "color: red");
        document.body.append(styled);
    }""")
    assert page.evaluate("() => window.__ranInline === undefined")  # blocked, not run
    for _ in range(50):  # the reports reach Python through an exposed binding, a moment later
        if sum(("script-src" in v) or ("style-src" in v) for v in csp_violations) >= 2:
            break
        page.wait_for_timeout(100)
    assert any("script-src" in v for v in csp_violations), csp_violations
    assert any("style-src" in v for v in csp_violations), csp_violations
    csp_violations.clear()  # expected here: the fixture's final check is for the pages' own behaviour
