"""User accounts: create, find, list, disable. Users are never deleted: the audit trail refers to them."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.db.access_tables import Role, User
from server.db.base import utcnow
from server.security.passwords import hash_password
from server.services.errors import ConflictError, NotFoundError

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,63}$")


class DemoUserRefused(PermissionError):
    """Demo accounts (random passwords printed on a terminal) never exist in production."""


def normalise_username(username: str) -> str:
    return username.strip().lower()


def check_username(username: str) -> str:
    """The stored form of ``username`` or ValueError: 2-64 of a-z 0-9 . _ @ -, case-insensitive."""
    name = normalise_username(username)
    if not _USERNAME.fullmatch(name):
        raise ValueError("username: 2-64 characters of a-z, 0-9, '.', '_', '@', '-', starting with a letter or digit")
    return name


def create_user(*, session: Session, username: str, password: str, role: Role, demo: bool = False,
                production: bool = False) -> User:
    """Insert a user with an argon2 hash of ``password``. ConflictError if the name is taken."""
    if demo and production:
        raise DemoUserRefused("demo users are refused in production (WARDWATCH_ENVIRONMENT=production)")
    name = check_username(username)
    if get_user(session=session, username=name) is not None:
        raise ConflictError(f"user {name!r} already exists")
    user = User(username=name, password_hash=hash_password(password), role=Role(role), demo=demo, active=True)
    session.add(user)
    session.flush()
    return user


def get_user(*, session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == normalise_username(username))).first()


def get_user_by_id(*, session: Session, user_id: int) -> User | None:
    """The user with this id (a signed-in principal's own row), if it still exists."""
    return session.get(User, user_id)


def list_users(*, session: Session) -> Sequence[User]:
    return session.scalars(select(User).order_by(User.id)).all()


def disable_user(*, session: Session, username: str) -> User:
    """Disabled users can neither sign in nor use their sessions or tokens (checked on every request).
    ConflictError for the last active admin: nobody could manage users over the API any more."""
    user = get_user(session=session, username=username)
    if user is None:
        raise NotFoundError("user", username)
    if user.active and user.role == Role.admin:
        others = session.scalar(select(func.count()).select_from(User).where(
            User.role == Role.admin, User.active.is_(True), User.id != user.id)) or 0
        if others == 0:
            raise ConflictError(f"{user.username!r} is the last active admin: create another admin first")
    user.active = False
    user.disabled_at = user.disabled_at or utcnow()
    session.flush()
    return user


def may_act(user: User, *, production: bool) -> bool:
    """An account may authenticate: active, and not a demo account on a production server."""
    return user.active and not (production and user.demo)
