"""Token look-ups are cached per API process (issue 12) and never outlive a change to the credential: a token
revoked over REST, revoked or expired by hand in SQL from another connection, or whose user is disabled or
changes role, is refused on the very next request; a cached token costs no token query at all."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select, text

from server.db.access_tables import ApiToken, AuthEpoch
from server.db.base import utcnow
from server.db.session import make_engine
from tests.accounts import bearer, ensure_user, token_for

EVENTS = "/api/v1/events?limit=5"


def _token_queries(app: object) -> list[str]:
    """Collects the statements that read the api_token table, as the server sends them."""
    seen: list[str] = []

    def capture(_conn, _cursor, statement, _params, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and "FROM api_token" in statement:
            seen.append(statement)

    event.listen(app.state.session_factory.kw["bind"], "before_cursor_execute", capture)  # type: ignore[attr-defined]
    return seen


def _sql(db_url: str, statement: str, **params: object) -> None:
    """Another connection, as an operator's psql session or another API process would be."""
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement), params)
    finally:
        engine.dispose()


def _token_id(app: object, secret_headers: dict[str, str]) -> int:
    from server.security.credentials import digest

    secret = secret_headers["Authorization"].removeprefix("Bearer ")
    with app.state.session_factory() as session:  # type: ignore[attr-defined]
        return int(session.scalar(select(ApiToken.id).where(ApiToken.token_hash == digest(secret))))


def test_a_cached_token_costs_no_token_query(app) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(app)
    headers = bearer(app, "clinician")
    queries = _token_queries(app)
    assert client.get(EVENTS, headers=headers).status_code == 200
    assert queries, "the first request looks the token up"
    queries.clear()
    for _ in range(3):
        assert client.get(EVENTS, headers=headers).status_code == 200
    assert queries == []
    assert len(app.state.token_cache) == 1


def test_revoked_over_rest_is_refused_on_the_next_request(app) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(app)
    headers = bearer(app, "clinician")
    assert client.get(EVENTS, headers=headers).status_code == 200  # now cached
    answer = client.delete(f"/api/v1/tokens/{_token_id(app, headers)}", headers=bearer(app, "admin"))
    assert answer.status_code == 200, answer.text
    refused = client.get(EVENTS, headers=headers)
    assert refused.status_code == 401 and "invalid_token" in refused.headers["www-authenticate"]


@pytest.mark.parametrize("change", ["revoke", "expire", "disable_user", "demote_user", "delete_token"])
def test_a_change_made_in_sql_elsewhere_is_seen_on_the_next_request(app, db_url: str, change: str) -> None:  # type: ignore[no-untyped-def]
    """The change does not go through this process at all (psql, the CLI, another API process): the epoch the
    database triggers raise is what empties the cache."""
    client = TestClient(app)
    name = ensure_user(app, "clinician", username=f"sql-{change.replace('_', '-')}")
    headers = {"Authorization": f"Bearer {token_for(app, 'clinician', username=name)}"}
    assert client.get(EVENTS, headers=headers).status_code == 200
    assert client.get(EVENTS, headers=headers).status_code == 200  # served from the cache
    token_id = _token_id(app, headers)
    statements = {
        "revoke": ("UPDATE api_token SET revoked_at = :now WHERE id = :id", {"now": utcnow(), "id": token_id}),
        "expire": ("UPDATE api_token SET expires_at = :past WHERE id = :id",
                   {"past": utcnow() - timedelta(seconds=1), "id": token_id}),
        "disable_user": ("UPDATE app_user SET active = :no WHERE username = :name", {"no": False, "name": name}),
        "demote_user": ("UPDATE app_user SET role = 'auditor' WHERE username = :name", {"name": name}),
        "delete_token": ("DELETE FROM api_token WHERE id = :id", {"id": token_id}),
    }
    statement, params = statements[change]
    _sql(db_url, statement, **params)
    if change == "demote_user":
        # an auditor may not review (a token keeps its scopes but never exceeds its user's role): 403 before the
        # event is even looked for; the cached clinician would have got 404 for the missing event
        answer = client.post("/api/v1/events/999999/review", json={"decision": "confirmed"}, headers=headers)
        assert answer.status_code == 403, answer.text
    else:
        answer = client.get(EVENTS, headers=headers)
        assert answer.status_code == 401, answer.text


def test_last_used_is_still_written_and_does_not_empty_the_cache(app) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(app)
    headers = bearer(app, "clinician")
    token_id = _token_id(app, headers)
    with app.state.session_factory() as session:
        session.execute(text("UPDATE api_token SET last_used_at = NULL WHERE id = :id"), {"id": token_id})
        session.commit()
        epoch = session.scalar(select(AuthEpoch.value))
    app.state.token_cache.clear()
    assert client.get(EVENTS, headers=headers).status_code == 200
    with app.state.session_factory() as session:
        assert session.scalar(select(ApiToken.last_used_at).where(ApiToken.id == token_id)) is not None
        assert session.scalar(select(AuthEpoch.value)) == epoch  # only credential changes raise it


def test_an_expired_token_is_refused_by_the_clock_while_cached(app) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(app)
    headers = bearer(app, "clinician", expires_days=1)
    assert client.get(EVENTS, headers=headers).status_code == 200
    cache = app.state.token_cache
    principal = cache.resolve  # the entry is what the next request would use; move the clock past its expiry
    with app.state.session_factory() as session:
        secret = headers["Authorization"].removeprefix("Bearer ")
        assert principal(session=session, secret=secret, production=False) is not None
        assert principal(session=session, secret=secret, production=False,
                         now=utcnow() + timedelta(days=1, seconds=1)) is None
