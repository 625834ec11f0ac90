"""Ended browser sessions and sign-in tries outside the throttle window are deleted (at start-up, periodically,
and by ``wardwatch sessions purge``); live sessions and recent tries stay, and so does the whole audit log."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from server.bootstrap import open_database
from server.db.access_tables import AuditLog, LoginAttempt, Outcome, Role, User, UserSession
from server.db.base import utcnow
from server.db.session import session_scope
from server.main import create_app
from server.services.browser_sessions import resolve_session, start_session
from server.services.housekeeping import purge_expired
from server.services.users import create_user, get_user
from server.settings import Settings
from tests.accounts import PASSWORD, ensure_user
from tests.server.access import signed_in

IDLE, WINDOW = timedelta(minutes=30), timedelta(seconds=900)  # the settings' defaults


def _settings(db_url: str, tmp_path: Path, **extra: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None, device="cpu", **extra)


def _session_row(user: User, now: datetime, *, seen_ago: timedelta, ends_in: timedelta,
                 revoked: bool = False) -> UserSession:
    return UserSession(user=user, id_hash=secrets.token_hex(32),
                       csrf_token="c" * 43, created_at=now - timedelta(hours=1), last_seen_at=now - seen_ago,
                       expires_at=now + ends_in, revoked_at=now - timedelta(minutes=1) if revoked else None)


def _dead_rows(session: Session, user: User, now: datetime) -> None:
    """One session of each way to end (idle, past its end, signed out) and one try out of the window."""
    session.add_all([
        _session_row(user, now, seen_ago=IDLE, ends_in=timedelta(hours=1)),                 # idle exactly 30 min
        _session_row(user, now, seen_ago=timedelta(seconds=1), ends_in=timedelta(0)),       # at its absolute end
        _session_row(user, now, seen_ago=timedelta(minutes=1), ends_in=timedelta(hours=1), revoked=True),
        LoginAttempt(username=user.username, client_address="10.0.0.9", succeeded=False, at=now - WINDOW),
    ])


def _counts(factory: Any) -> tuple[int, int, int]:
    with session_scope(factory) as session:
        return tuple(session.scalar(select(func.count()).select_from(t)) or 0  # type: ignore[return-value]
                     for t in (UserSession, LoginAttempt, AuditLog))


@pytest.fixture
def database(db_url: str, tmp_path: Path) -> Iterator[tuple[Settings, sessionmaker[Session]]]:
    """The schema and a clinician, without a server (so no housekeeper thread races the test)."""
    settings = _settings(db_url, tmp_path)
    engine, factory = open_database(settings)
    with session_scope(factory) as session:
        create_user(session=session, username="nurse.jo", password=PASSWORD, role=Role.clinician)
        session.add(AuditLog(at=utcnow() - timedelta(days=400), username="nurse.jo", action="login",  # old as can be
                             outcome=Outcome.allowed, status_code=200))
    yield settings, factory
    engine.dispose()


def test_purge_deletes_what_can_never_be_used_and_keeps_the_rest(database: Any) -> None:
    settings, factory = database
    name, now = "nurse.jo", utcnow()
    with session_scope(factory) as session:
        user = get_user(session=session, username=name)
        assert user is not None
        _live, cookie = start_session(session=session, user=user, absolute=timedelta(hours=12), client_address=None)
        session.add(_session_row(user, now, seen_ago=IDLE - timedelta(seconds=1), ends_in=timedelta(seconds=1)))
        session.add_all([LoginAttempt(username=name, client_address="10.0.0.9", succeeded=False,
                                      at=now - WINDOW + timedelta(seconds=1)),
                         LoginAttempt(username=name, client_address="10.0.0.9", succeeded=True, at=now)])
        _dead_rows(session, user, now)
    sessions, attempts, audit = _counts(factory)
    assert (sessions, attempts) == (5, 3) and audit >= 1

    with session_scope(factory) as session:
        purged = purge_expired(session=session, settings=settings, now=now)
    assert (purged.sessions, purged.login_attempts) == (3, 1)
    assert _counts(factory) == (2, 2, audit)  # the audit log is never purged
    with session_scope(factory) as session:
        assert resolve_session(session=session, session_id=cookie, idle=IDLE) is not None  # still signed in
        left = session.scalars(select(LoginAttempt.at)).all()
        assert all(at > now - WINDOW for at in left)
        again = purge_expired(session=session, settings=settings, now=now)
        assert (again.sessions, again.login_attempts) == (0, 0)


def test_the_server_purges_at_start_up_and_then_periodically(db_url: str, tmp_path: Path) -> None:
    app = create_app(_settings(db_url, tmp_path, purge_interval_minutes=0.01))  # every 0.6 s
    factory = app.state.session_factory
    name = ensure_user(app, "clinician")
    with session_scope(factory) as session:
        user = get_user(session=session, username=name)
        assert user is not None
        _dead_rows(session, user, utcnow())
    assert _counts(factory)[:2] == (3, 1)
    with TestClient(app):
        _wait_for(lambda: _counts(factory)[:2] == (0, 0), "the start-up purge")
        browser, _csrf = signed_in(app, "clinician")  # a live session and a recent (successful) try
        with session_scope(factory) as session:
            user = get_user(session=session, username=name)
            assert user is not None
            _dead_rows(session, user, utcnow())
        _wait_for(lambda: _counts(factory)[:2] == (1, 1), "a periodic purge")
        time.sleep(1.5)  # two more passes: the live session and the recent try survive them
        assert _counts(factory)[:2] == (1, 1)
        assert browser.get("/api/v1/session").status_code == 200


def _wait_for(condition: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.1)


def test_the_purge_command(database: Any, db_url: str, tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    from server.cli import main
    from server.settings import get_settings

    _settings_, factory = database
    monkeypatch.setenv("WARDWATCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WARDWATCH_DATABASE_URL", db_url)
    get_settings.cache_clear()
    try:
        with session_scope(factory) as session:
            user = get_user(session=session, username="nurse.jo")
            assert user is not None
            _dead_rows(session, user, utcnow())
        _sessions, _attempts, audit = _counts(factory)
        assert main(["sessions", "purge"]) == 0
        assert capsys.readouterr().out.strip() == "purged 3 ended session(s), 1 old sign-in attempt(s)"
        assert _counts(factory) == (0, 0, audit + 1)
        with session_scope(factory) as session:
            entry = session.scalars(select(AuditLog).order_by(AuditLog.id.desc()).limit(1)).one()
            assert (entry.action, entry.username, entry.object_type) == ("cli_sessions_purge", "system:cli",
                                                                         "session")
            assert (entry.detail or "").startswith("sessions=3 login_attempts=1")
        assert main(["sessions", "purge"]) == 0
        assert "purged 0 ended session(s), 0 old sign-in attempt(s)" in capsys.readouterr().out
    finally:
        get_settings.cache_clear()
