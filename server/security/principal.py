"""Who a request acts for, however it authenticated (browser session or API token)."""

from __future__ import annotations

from dataclasses import dataclass

from server.db.access_tables import Role
from server.security.permissions import Permission, Scope, is_allowed


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    role: Role
    token_id: int | None = None
    scopes: frozenset[Scope] | None = None  # None: a browser session, limited by the role only
    session_id: int | None = None
    csrf_token: str | None = None            # sessions only: required on every write

    @property
    def via_cookie(self) -> bool:
        return self.session_id is not None

    def can(self, permission: Permission) -> bool:
        return is_allowed(self.role, self.scopes, permission)
