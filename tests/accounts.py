"""Users and tokens for tests, made through the same services as ``wardwatch users/tokens create``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from server.db.access_tables import Role
from server.db.session import session_scope
from server.security.permissions import usable_scopes
from server.security.principal import Principal
from server.services.api_tokens import create_token
from server.services.users import create_user, get_user

PASSWORD = "correct horse battery staple"


def ensure_user(app: Any, role: str, *, username: str | None = None, password: str = PASSWORD) -> str:
    """The user ``test-<role>`` (or ``username``), created on first use; returns the username."""
    name = username or f"test-{role}"
    with session_scope(app.state.session_factory) as session:
        if get_user(session=session, username=name) is None:
            create_user(session=session, username=name, password=password, role=Role(role))
    return name


def principal_for(app: Any, role: str, *, username: str | None = None) -> Principal:
    """What a request of that user's browser session acts as (for calling services directly)."""
    name = ensure_user(app, role, username=username)
    with session_scope(app.state.session_factory) as session:
        user = get_user(session=session, username=name)
        assert user is not None
        return Principal(user_id=user.id, username=user.username, role=user.role)


def token_for(app: Any, role: str, *, scopes: Iterable[str] | None = None, username: str | None = None,
              expires_days: int | None = None) -> str:
    """A fresh API token for that user: every scope its role can use unless ``scopes`` says otherwise."""
    name = ensure_user(app, role, username=username)
    with session_scope(app.state.session_factory) as session:
        _row, secret = create_token(session=session, username=name, expires_days=expires_days,
                                    scopes=scopes if scopes is not None else usable_scopes(Role(role)))
    return secret


def bearer(app: Any, role: str, **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(app, role, **kwargs)}"}


def act_as(client: Any, role: str, **kwargs: Any) -> Any:
    """Make every later request of this TestClient / httpx.Client carry a token of ``role``."""
    client.headers.update(bearer(client.app, role, **kwargs))
    return client
