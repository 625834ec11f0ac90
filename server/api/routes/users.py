"""Users and API tokens, for admins (the same services as ``wardwatch users`` / ``wardwatch tokens``)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from server.api.deps import SessionDep
from server.api.params import IdPath, NamePath
from server.api.security import ManageUsers
from server.db.access_tables import ApiToken
from server.schemas import (
    TokenCreate,
    TokenCreated,
    TokenPublic,
    TokensPublic,
    UserAdminPublic,
    UserCreate,
    UsersPublic,
)
from server.security.passwords import WeakPasswordError
from server.services.api_tokens import ReviewTokenRefused, create_token, list_tokens, revoke_token
from server.services.errors import ConflictError
from server.services.users import create_user, disable_user, get_user_by_id, list_users

router = APIRouter(tags=["users"])


def token_public(token: ApiToken) -> TokenPublic:
    return TokenPublic(id=token.id, username=token.user.username, name=token.name, scopes=token.scopes,
                       created_at=token.created_at, expires_at=token.expires_at, revoked_at=token.revoked_at,
                       last_used_at=token.last_used_at)


@router.get("/users", response_model=UsersPublic)
def read_users(session: SessionDep, _access: ManageUsers) -> UsersPublic:
    users = list_users(session=session)
    return UsersPublic(data=[UserAdminPublic.model_validate(u) for u in users], count=len(users))


@router.post("/users", status_code=201, response_model=UserAdminPublic,
             responses={409: {"description": "the username is taken"}})
def post_user(session: SessionDep, access: ManageUsers, body: UserCreate) -> UserAdminPublic:
    """Create a user (the password is hashed with argon2id and never returned or logged)."""
    try:
        user = create_user(session=session, username=body.username, password=body.password, role=body.role)
    except ConflictError:
        raise  # 409, not a validation error (ConflictError is a ValueError too)
    except (WeakPasswordError, ValueError) as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    access.note(object_id=user.id, detail=f"username={user.username} role={user.role.value}")
    return UserAdminPublic.model_validate(user)


@router.post("/users/{username}/disable", response_model=UserAdminPublic,
             responses={409: {"description": "the last active admin"}})
def post_disable_user(session: SessionDep, _access: ManageUsers, username: NamePath) -> UserAdminPublic:
    """The user's sessions and tokens stop working at their next request. 409 for the last active admin."""
    return UserAdminPublic.model_validate(disable_user(session=session, username=username))


@router.get("/tokens", response_model=TokensPublic)
def read_tokens(session: SessionDep, _access: ManageUsers) -> TokensPublic:
    """Every token with its scopes and state, never its value."""
    tokens = list_tokens(session=session)
    return TokensPublic(data=[token_public(t) for t in tokens], count=len(tokens))


@router.post("/tokens", status_code=201, response_model=TokenCreated,
             responses={404: {"description": "no such user"}})
def post_token(session: SessionDep, access: ManageUsers, body: TokenCreate) -> TokenCreated:
    """A new token for a user; the answer holds the token itself, the only time it is ever shown.

    403 for a ``review`` token for anyone but the caller: it would let an admin review as that clinician."""
    admin = get_user_by_id(session=session, user_id=access.principal.user_id)
    try:
        token, secret = create_token(session=session, username=body.username, scopes=body.scopes,
                                     expires_days=body.expires_days, name=body.name, created_by=admin)
    except ReviewTokenRefused as exc:
        raise HTTPException(403, detail=str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    access.note(object_id=token.id, detail=f"username={token.user.username} scopes={' '.join(token.scopes)}")
    return TokenCreated(**token_public(token).model_dump(), token=secret)


@router.delete("/tokens/{token_id}", response_model=TokenPublic)
def delete_token(session: SessionDep, _access: ManageUsers, token_id: IdPath) -> TokenPublic:
    """Revoke a token at once (kept, marked revoked: the audit trail refers to it)."""
    return token_public(revoke_token(session=session, token_id=token_id))
