"""The permission table is coherent, and an API route without a guard cannot ship: the start-up check finds it."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI

from server.api.auditing import API_PREFIX
from server.api.security import Authenticated, Public, unguarded_routes
from server.db.access_tables import Role
from server.security.permissions import PERMISSIONS, ROLE_SCOPES, Permission, is_allowed


def test_each_scope_a_role_may_hold_grants_it_something() -> None:
    for role, scopes in ROLE_SCOPES.items():
        for scope in scopes:
            assert any(is_allowed(role, frozenset({scope}), p) for p in Permission), (role, scope)
    assert set(PERMISSIONS) == set(Permission)


def test_the_rules_the_issue_names() -> None:
    session = None  # a browser session: the role alone decides
    assert not is_allowed(Role.clinician, session, Permission.manage_models)
    assert not is_allowed(Role.clinician, session, Permission.manage_users)
    assert not is_allowed(Role.clinician, session, Permission.read_audit)
    assert not is_allowed(Role.auditor, session, Permission.review)
    assert is_allowed(Role.auditor, session, Permission.read_audit)
    assert not is_allowed(Role.admin, frozenset(ROLE_SCOPES[Role.admin]) - {"write:recordings"},  # type: ignore[operator]
                          Permission.write_recordings)


def test_an_unguarded_route_is_found() -> None:
    app = FastAPI()
    router = APIRouter()

    @router.get("/guarded")
    def guarded(_access: Authenticated) -> None: ...

    @router.get("/open", dependencies=[Public])
    def open_route() -> None: ...

    @router.get("/forgotten")
    def forgotten(_x: int = Depends(lambda: 1)) -> None: ...

    app.include_router(router, prefix=API_PREFIX)
    assert unguarded_routes(app.routes) == ["['GET'] /api/v1/forgotten"]
