"""Browser sessions, attacked: cookie flags, session fixation, CSRF on cookie-authenticated writes, sign-out,
idle and absolute expiry, brute-force throttling per username and per address, disabled and demo accounts."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from server.db.access_tables import LoginAttempt, UserSession
from server.db.base import utcnow
from server.db.session import session_scope
from server.main import create_app
from server.security.secret_box import new_key
from server.services.users import DemoUserRefused, create_user, disable_user
from server.settings import Settings
from tests.accounts import PASSWORD, bearer, ensure_user
from tests.server.access import seed, signed_in

LOGIN = "/api/v1/session"


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[object]:
    application = create_app(Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None,
                                      device="cpu", login_max_failures_per_address=8))
    with TestClient(application):
        ensure_user(application, "clinician")
        yield application


def _login(client: TestClient, username: str = "test-clinician", password: str = PASSWORD):  # type: ignore[no-untyped-def]
    return client.post(LOGIN, json={"username": username, "password": password})


def test_cookie_flags_and_what_the_answer_holds(app) -> None:  # type: ignore[no-untyped-def]
    answer = _login(TestClient(app))
    assert answer.status_code == 200
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("wardwatch_session=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/" in cookie and "Secure" not in cookie  # plain http in tests: a Secure cookie would be lost
    body = answer.json()
    assert body["user"]["username"] == "test-clinician" and body["user"]["role"] == "clinician"
    assert body["auth"] == "session" and len(body["csrf_token"]) >= 40 and "review" in body["permissions"]
    assert "password" not in answer.text and "hash" not in answer.text
    assert cookie.split(";")[0].split("=", 1)[1] not in answer.text  # the session id only in the cookie

    https = _login(TestClient(app, base_url="https://testserver"))
    assert "Secure" in https.headers["set-cookie"]


def test_cookie_secure_setting(db_url: str, tmp_path: Path) -> None:
    """Behind a TLS-terminating proxy the request looks like http: production sets Secure anyway, and
    ``cookie_secure`` decides when it is set."""
    production = dict(environment="production", secret_keys=[new_key()])
    for index, (extra, secure) in enumerate(((production, True), (dict(cookie_secure=True), True),
                                             ({**production, "cookie_secure": False}, False))):
        application = create_app(Settings(data_dir=tmp_path / f"d{index}", database_url=db_url, broker_url=None,
                                          device="cpu", **extra))
        with TestClient(application) as client:
            ensure_user(application, "clinician", username=f"cookie-{index}")
            answer = _login(client, username=f"cookie-{index}")
            assert answer.status_code == 200 and ("Secure" in answer.headers["set-cookie"]) is secure


def test_a_hospital_nat_is_not_locked_out_by_one_user(app) -> None:  # type: ignore[no-untyped-def]
    """One clinician mistyping five times locks that username, not everybody behind the same address."""
    ward = TestClient(app, client=("10.0.0.1", 40000))
    for _ in range(5):
        assert _login(ward, password="wrong password!").status_code == 401
    assert _login(ward).status_code == 429
    ensure_user(app, "auditor")
    assert _login(ward, username="test-auditor").status_code == 200


def test_parallel_wrong_passwords_get_at_most_the_limit_of_checks(db_url: str, tmp_path: Path) -> None:
    """The try is committed before the limit is checked: 12 guesses at once cannot all slip under 5."""
    import httpx

    from tests.conftest import running_server

    application = create_app(Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None,
                                      device="cpu"))
    with running_server(application) as base:
        ensure_user(application, "clinician")

        def guess(index: int) -> int:
            return httpx.post(f"{base}{LOGIN}", json={"username": "test-clinician", "password": f"guess {index}!"},
                              timeout=60).status_code

        with ThreadPoolExecutor(max_workers=12) as pool:
            codes = list(pool.map(guess, range(12)))
        assert set(codes) <= {401, 429} and codes.count(401) <= 5, codes
        assert codes.count(429) >= 7
        with session_scope(application.state.session_factory) as session:
            failures = session.scalars(select(LoginAttempt).where(LoginAttempt.succeeded.is_(False))).all()
            assert len(failures) == codes.count(401)  # throttled tries are taken back, checked ones stay


def test_a_new_session_id_at_every_sign_in(app) -> None:  # type: ignore[no-untyped-def]
    """Session fixation: an id planted in the browser before sign-in is never adopted, and signing in again
    replaces (and revokes) the session the browser had."""
    client = TestClient(app)
    client.cookies.set("wardwatch_session", "attacker-chosen-id")
    first = _login(client)
    issued = first.cookies["wardwatch_session"]
    assert issued != "attacker-chosen-id"
    planted = TestClient(app)
    planted.cookies.set("wardwatch_session", "attacker-chosen-id")
    assert planted.get(LOGIN).status_code == 401

    client.cookies.set("wardwatch_session", issued)
    second = _login(client)
    renewed = second.cookies["wardwatch_session"]
    assert renewed != issued
    old = TestClient(app)
    old.cookies.set("wardwatch_session", issued)
    assert old.get(LOGIN).status_code == 401  # the previous session ended at the new sign-in
    assert second.json()["csrf_token"] != first.json()["csrf_token"]


def test_csrf_token_needed_on_cookie_writes(app) -> None:  # type: ignore[no-untyped-def]
    rows = seed(app)
    browser, csrf = signed_in(app, "clinician")
    review = f"/api/v1/events/{rows.event_id}/review"
    missing = browser.post(review, json={"decision": "confirmed"})
    assert missing.status_code == 403 and "X-CSRF-Token" in missing.json()["detail"]
    tampered = ("y" if csrf[0] == "x" else "x") + csrf[1:]
    wrong = browser.post(review, json={"decision": "confirmed"}, headers={"X-CSRF-Token": tampered})
    assert wrong.status_code == 403
    other, other_csrf = signed_in(app, "clinician", username="second-clinician")
    crossed = browser.post(review, json={"decision": "confirmed"}, headers={"X-CSRF-Token": other_csrf})
    assert crossed.status_code == 403  # another session's token does not do
    assert browser.get(f"/api/v1/events/{rows.event_id}").json()["status"] == "flagged"
    ok = browser.post(review, json={"decision": "confirmed"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200 and ok.json()["reviewer"] == "test-clinician"
    assert browser.get(LOGIN).json()["csrf_token"] == csrf  # GET /session hands the page its token
    # bearer requests need no CSRF token: a browser never attaches an Authorization header by itself
    token = TestClient(app).post(review, json={"decision": "rejected"}, headers=bearer(app, "clinician"))
    assert token.status_code == 200
    assert browser.delete(LOGIN).status_code == 403  # signing out is a write too
    other.close()


def test_sign_out_ends_the_session_on_the_server(app) -> None:  # type: ignore[no-untyped-def]
    browser, csrf = signed_in(app, "clinician")
    cookie = browser.cookies["wardwatch_session"]
    answer = browser.delete(LOGIN, headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 204 and 'wardwatch_session=""' in answer.headers["set-cookie"]
    replay = TestClient(app)
    replay.cookies.set("wardwatch_session", cookie)
    gone = replay.get("/api/v1/events")
    assert gone.status_code == 401 and gone.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("expiry", ["idle", "absolute"])
def test_idle_and_absolute_expiry(app, expiry: str) -> None:  # type: ignore[no-untyped-def]
    browser, _csrf = signed_in(app, "clinician")
    assert browser.get("/api/v1/events").status_code == 200
    settings = app.state.settings
    with session_scope(app.state.session_factory) as session:
        if expiry == "idle":  # quiet for longer than WARDWATCH_SESSION_IDLE_MINUTES
            values = {"last_seen_at": utcnow() - timedelta(minutes=settings.session_idle_minutes + 1)}
        else:  # busy all along, but past WARDWATCH_SESSION_ABSOLUTE_HOURS
            values = {"expires_at": utcnow() - timedelta(seconds=1)}
        session.execute(update(UserSession).values(**values))
    ended = browser.get("/api/v1/events")
    assert ended.status_code == 401 and "sign in again" in ended.json()["detail"]
    assert "Max-Age=0" in ended.headers["set-cookie"]  # and the browser is told to drop the dead cookie


def test_brute_force_is_throttled_per_username_and_per_address(app) -> None:  # type: ignore[no-untyped-def]
    attacker = TestClient(app, client=("203.0.113.9", 40000))
    for _ in range(5):
        wrong = _login(attacker, password="wrong password!")
        assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong username or password"
        assert wrong.headers["www-authenticate"].startswith("Bearer")
    throttled = _login(attacker)  # even the right password is not tried now
    assert throttled.status_code == 429 and "try again" in throttled.json()["detail"]
    assert 0 < int(throttled.headers["retry-after"]) <= 900
    elsewhere = TestClient(app, client=("198.51.100.7", 40000))
    assert _login(elsewhere).status_code == 429  # the username is throttled from every address

    ensure_user(app, "auditor")
    spray = TestClient(app, client=("192.0.2.1", 40000))  # many usernames from one address
    for index in range(8):  # per-address limit (8 in this app): higher than per username, for a hospital NAT
        assert _login(spray, username=f"nobody-{index}").status_code == 401
    assert _login(spray, username="test-auditor").status_code == 429

    # the window slides: once the failures are older than it, the right password works again
    with session_scope(app.state.session_factory) as session:
        session.execute(update(LoginAttempt).values(at=utcnow() - timedelta(seconds=901)))
    assert _login(attacker).status_code == 200
    with session_scope(app.state.session_factory) as session:
        tries = session.scalars(select(LoginAttempt)).all()
        assert sum(not t.succeeded for t in tries) == 13 and all(t.client_address for t in tries)


def test_unknown_user_and_wrong_password_answer_alike(app) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(app)
    unknown = _login(client, username="no-such-user")
    wrong = _login(client, password="not the password")
    assert unknown.status_code == wrong.status_code == 401 and unknown.json() == wrong.json()


def test_disabled_user_is_out_at_once(app) -> None:  # type: ignore[no-untyped-def]
    browser, _csrf = signed_in(app, "clinician")
    token = bearer(app, "clinician")
    with session_scope(app.state.session_factory) as session:
        disable_user(session=session, username="test-clinician")
    assert browser.get("/api/v1/events").status_code == 401
    assert TestClient(app).get("/api/v1/events", headers=token).status_code == 401
    assert _login(TestClient(app)).status_code == 401


def test_demo_accounts_never_work_in_production(db_url: str, tmp_path: Path) -> None:
    development = create_app(Settings(data_dir=tmp_path / "dev", database_url=db_url, broker_url=None))
    with TestClient(development) as client, session_scope(development.state.session_factory) as session:
        create_user(session=session, username="demo-clinician", password="printed on a terminal",
                    role="clinician", demo=True)  # type: ignore[arg-type]
    with TestClient(development) as client:
        assert _login(client, "demo-clinician", "printed on a terminal").status_code == 200
        demo_token = bearer(development, "clinician", username="demo-clinician")
    production = create_app(Settings(data_dir=tmp_path / "prod", database_url=db_url, broker_url=None,
                                     environment="production", secret_keys=[new_key()]))
    with TestClient(production) as client:
        assert _login(client, "demo-clinician", "printed on a terminal").status_code == 401
        assert client.get("/api/v1/events", headers=demo_token).status_code == 401
        with pytest.raises(DemoUserRefused), session_scope(production.state.session_factory) as session:
            create_user(session=session, username="demo-admin", password="another printed one", role="admin",  # type: ignore[arg-type]
                        demo=True, production=True)


def test_the_session_id_is_stored_only_as_a_digest(app) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    from sqlalchemy import text

    browser, _csrf = signed_in(app, "clinician")
    cookie = browser.cookies["wardwatch_session"]
    with app.state.session_factory() as session:
        dump = " ".join(str(v) for row in session.execute(text("SELECT * FROM user_session")) for v in row)
    assert cookie not in dump and hashlib.sha256(cookie.encode()).hexdigest() in dump


def test_sign_in_takes_json_only(app) -> None:  # type: ignore[no-untyped-def]
    """Login CSRF: a cross-site HTML form can only send form or text bodies, which sign nobody in."""
    client = TestClient(app)
    form = client.post(LOGIN, data={"username": "test-clinician", "password": PASSWORD})
    text_body = client.post(LOGIN, content=f'{{"username": "test-clinician", "password": "{PASSWORD}"}}',
                            headers={"Content-Type": "text/plain"})
    assert form.status_code == text_body.status_code == 422
    assert "set-cookie" not in form.headers and "set-cookie" not in text_body.headers
