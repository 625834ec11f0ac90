"""Users, API tokens and the audit trail in real Chromium: an admin creates a user and a token (shown once,
gone after a reload), revokes the token and disables the user, and the API then refuses both; an auditor
filters and pages through the audit trail; a clinician gets neither page (the server refuses the data and the
page says so); axe-core finds no serious violation on any of them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Dialog, Page, expect

from server.main import create_app
from server.settings import Settings
from tests.accounts import bearer, ensure_user
from tests.conftest import running_server
from tests.web.a11y import assert_accessible
from tests.web.conftest import ARTIFACTS, sign_in

pytestmark = pytest.mark.browser
ADMIN: dict[str, str] = {}  # an admin token for the test's own API calls
NEW_PASSWORD = "a long new password for jo"


@pytest.fixture
def base(tmp_path: Path) -> Iterator[str]:
    app = create_app(Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu"))
    with running_server(app) as url:
        for role in ("admin", "clinician", "auditor"):
            ensure_user(app, role)
        ADMIN.clear()
        ADMIN.update(bearer(app, "admin"))
        yield url


def _api(base: str, path: str, headers: dict[str, str] | None = None, **params: str) -> httpx.Response:
    return httpx.get(f"{base}/api/v1{path}", headers=headers or ADMIN, params=params)


def _accept(dialog: Dialog) -> None:
    dialog.accept()


def test_admin_manages_users_and_tokens(base: str, page: Page) -> None:
    page.set_viewport_size({"width": 1366, "height": 768})
    page.on("dialog", _accept)  # "Disable …?" asks first
    page.goto(f"{base}/users.html")
    sign_in(page, "test-admin")
    nav = page.locator("#site-nav")
    expect(nav.get_by_role("link")).to_have_text(
        ["Event review", "Recordings", "Models & fine-tuning", "Users & tokens", "Audit trail"])
    expect(nav.locator("a[aria-current=page]")).to_have_text("Users & tokens")
    expect(page.locator('#user-rows tr[data-username="test-clinician"]')).to_contain_text("clinician")
    assert_accessible(page)

    # a too short password: the server's 422 as a readable sentence, nothing created
    new_user = page.get_by_role("form", name="New user")
    new_user.get_by_label("New username").fill("nurse-jo")
    new_user.get_by_label("Initial password").fill("short")
    page.get_by_role("button", name="Create user").click()
    expect(page.locator("#user-form-status")).to_have_text(re.compile(r"User not created — 422: password: .*12"))
    assert "nurse-jo" not in [u["username"] for u in _api(base, "/users").json()["data"]]

    new_user.get_by_label("Initial password").fill(NEW_PASSWORD)
    new_user.get_by_label("Role").select_option("clinician")
    page.get_by_role("button", name="Create user").click()
    expect(page.locator("#user-form-status")).to_have_text("Created nurse-jo (clinician).")
    row = page.locator('#user-rows tr[data-username="nurse-jo"]')
    expect(row).to_have_attribute("data-state", "active")
    (jo,) = [u for u in _api(base, "/users").json()["data"] if u["username"] == "nurse-jo"]
    assert jo["role"] == "clinician" and jo["active"]
    assert httpx.post(f"{base}/api/v1/session", json={"username": "nurse-jo", "password": NEW_PASSWORD}
                      ).status_code == 200

    # a token for her, shown once
    page.get_by_label("User", exact=True).select_option("nurse-jo")
    page.get_by_label("Name", exact=True).fill("bedside tablet")
    page.get_by_role("button", name="Create token").click()
    secret_box = page.locator("#new-token")
    expect(secret_box).to_be_visible()
    expect(secret_box).to_be_focused()
    secret = page.locator("#new-token-value").inner_text()
    assert secret.startswith("ww_"), secret
    (token,) = [t for t in _api(base, "/tokens").json()["data"] if t["name"] == "bedside tablet"]
    assert token["username"] == "nurse-jo" and token["scopes"] == ["read:events"]
    assert "token" not in token  # the list never holds the value
    jo_token = {"Authorization": f"Bearer {secret}"}
    assert _api(base, "/events", jo_token).status_code == 200
    assert _api(base, "/users", jo_token).status_code == 403  # only the scopes asked for
    token_row = page.locator(f"#token-{token['id']}")
    expect(token_row).to_have_attribute("data-state", "active")
    expect(token_row).to_contain_text("bedside tablet")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "users-new-token.png"), full_page=True)
    assert_accessible(page)

    page.reload()
    expect(page.locator("#user-name")).to_contain_text("test-admin")
    expect(token_row).to_be_visible()
    expect(secret_box).to_be_hidden()
    assert secret not in page.content()  # gone with the page: nowhere to fetch it again

    token_row.get_by_role("button", name=f"Revoke token {token['id']}").click()
    expect(page.locator("#tokens-status")).to_have_text(f"Token {token['id']} revoked: it no longer works.")
    expect(token_row).to_have_attribute("data-state", "revoked")
    expect(token_row.get_by_role("button")).to_have_count(0)
    assert _api(base, "/events", jo_token).status_code == 401

    # a second token, then disabling the user stops it and her password
    page.get_by_label("User", exact=True).select_option("nurse-jo")
    page.get_by_role("button", name="Create token").click()
    expect(secret_box).to_be_visible()
    second = {"Authorization": f"Bearer {page.locator('#new-token-value').inner_text()}"}
    assert _api(base, "/events", second).status_code == 200
    page.get_by_role("button", name="I have copied it").click()
    expect(secret_box).to_be_hidden()
    row.get_by_role("button", name="Disable nurse-jo").click()
    expect(page.locator("#users-status")).to_have_text(
        "Disabled nurse-jo: their sessions and tokens no longer work.")
    expect(row).to_have_attribute("data-state", "disabled")
    assert _api(base, "/events", second).status_code == 401
    (second_row,) = [t for t in _api(base, "/tokens").json()["data"]
                     if t["username"] == "nurse-jo" and not t["revoked_at"]]
    expect(page.locator(f"#token-{second_row['id']}")).to_have_attribute("data-state", "user-disabled")
    expect(page.get_by_label("User", exact=True)).not_to_have_value("")
    assert httpx.post(f"{base}/api/v1/session", json={"username": "nurse-jo", "password": NEW_PASSWORD}
                      ).status_code == 401
    expect(page.get_by_label("User", exact=True).locator("option", has_text="nurse-jo")).to_have_count(0)

    # the last admin cannot be disabled: the 409 reads as a sentence
    page.locator('#user-rows tr[data-username="test-admin"]').get_by_role("button", name="Disable test-admin").click()
    expect(page.locator("#users-status")).to_contain_text("test-admin not disabled — 409")
    page.set_viewport_size({"width": 1024, "height": 768})
    assert_accessible(page)
    page.screenshot(path=str(ARTIFACTS / "users-1024.png"), full_page=True)


def test_auditor_filters_the_trail_and_a_clinician_is_refused(base: str, page: Page) -> None:
    page.set_viewport_size({"width": 1024, "height": 768})
    # a clinician: neither page's data, and each page says why
    page.goto(f"{base}/users.html")
    sign_in(page, "test-clinician")
    expect(page.locator("#page-refused")).to_have_text(
        "You cannot manage users and tokens: 403: the clinician role may not do this")
    expect(page.locator("#users")).to_be_hidden()
    expect(page.locator("#site-nav").get_by_role("link")).to_have_text(
        ["Event review", "Recordings", "Models & fine-tuning"])
    assert_accessible(page)
    page.goto(f"{base}/audit.html")
    expect(page.locator("#page-refused")).to_have_text(
        "You cannot read the audit trail: 403: the clinician role may not do this")
    expect(page.locator("#audit-rows tr")).to_have_count(0)
    page.get_by_role("button", name="Sign out").click()

    for _ in range(30):  # audited reads to page through
        assert _api(base, "/users").status_code == 200
    sign_in(page, "test-auditor")
    expect(page.locator("#site-nav").get_by_role("link")).to_have_text(
        ["Event review", "Models & fine-tuning", "Audit trail"])
    expect(page.locator("#audit-rows tr").first).to_be_visible()
    assert_accessible(page)

    # who + action, 25 a page: the same entries as the API, newest first, over two pages
    page.get_by_label("User", exact=True).fill("test-admin")
    page.get_by_label("Action", exact=True).fill("read_users")
    page.get_by_label("Per page", exact=True).select_option("25")
    page.get_by_role("button", name="Apply filters").click()
    expected = _api(base, "/audit", user="test-admin", action="read_users", limit="100").json()["data"]
    assert len(expected) == 30
    rows = page.locator("#audit-rows tr")
    expect(page.locator("#audit-count")).to_have_text("30 matching entries; showing 1–25, newest first.")
    assert [int(i) for i in rows.evaluate_all("rs => rs.map(r => r.dataset.id)")] == [e["id"] for e in expected[:25]]
    assert set(rows.evaluate_all("rs => rs.map(r => r.dataset.action)")) == {"read_users"}
    assert "user=test-admin" in page.url and "action=read_users" in page.url
    page.get_by_role("button", name="Older →").click()
    expect(page.locator("#audit-count")).to_have_text("30 matching entries; showing 26–30, newest first.")
    assert [int(i) for i in rows.evaluate_all("rs => rs.map(r => r.dataset.id)")] == [e["id"] for e in expected[25:]]
    expect(page.get_by_role("button", name="Older →")).to_be_disabled()
    page.get_by_role("button", name="← Newer").click()
    expect(page.locator("#audit-count")).to_have_text("30 matching entries; showing 1–25, newest first.")

    # the clinician's refusals, by outcome and record type
    page.get_by_role("button", name="Clear").click()
    page.get_by_label("User", exact=True).fill("test-clinician")
    page.get_by_label("Outcome", exact=True).select_option("refused")
    page.get_by_label("Record type", exact=True).select_option("audit_log")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("#audit-count")).to_have_text(re.compile(r"^1 matching entries"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-outcome", "refused")
    expect(rows.first).to_contain_text("read_audit")
    expect(rows.first).to_contain_text("403")

    # a time range: nothing after tomorrow; everything so far before it
    page.get_by_role("button", name="Clear").click()
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).astimezone().strftime("%Y-%m-%dT%H:%M:%S")
    page.get_by_label("From", exact=True).fill(tomorrow)
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("#audit-count")).to_have_text("No audit entries match these filters.")
    page.get_by_label("From", exact=True).fill("")
    page.get_by_label("Until", exact=True).fill(tomorrow)
    page.get_by_label("User", exact=True).fill("test-auditor")
    page.get_by_role("button", name="Apply filters").click()
    expect(rows.first).to_be_visible()
    shown = rows.evaluate_all("rs => rs.map(r => Number(r.dataset.id))")
    api_ids = [e["id"] for e in _api(base, "/audit", user="test-auditor", limit="50").json()["data"]]
    assert shown and set(shown) <= set(api_ids)  # the API call itself is logged after the page's read

    # a bad filter value reads as the server's sentence
    page.get_by_role("button", name="Clear").click()
    page.get_by_label("Record ID", exact=True).fill("x" * 65)
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("#audit-count")).to_have_text(re.compile(r"Could not load the audit trail — 422: object_id"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "audit.png"), full_page=True)
    assert_accessible(page)
