"""Admin access for model and training endpoints: a bearer token from ``WARDWATCH_ADMIN_TOKEN``.

A stop-gap until users and scoped API tokens exist: without a configured token, development mode lets
everyone through (the embedded demo) and production refuses every admin call.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException

from server.api.deps import SettingsDep


def require_admin(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> str:
    """The caller's identity for admin endpoints, or 401/403."""
    if settings.admin_token is None:
        if settings.environment == "development":
            return "admin (development, no token configured)"
        raise HTTPException(403, detail="admin endpoints are disabled: set WARDWATCH_ADMIN_TOKEN")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, detail="admin token required (Authorization: Bearer ...)",
                            headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(token.encode(), settings.admin_token.encode()):
        raise HTTPException(403, detail="invalid admin token")
    return "admin"


AdminDep = Annotated[str, Depends(require_admin)]
