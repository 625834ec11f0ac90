"""Typed tables for access control and the audit trail: users, browser sessions, API tokens, login attempts,
and the append-only audit log (issue 10).

Secrets are never stored: passwords as argon2 hashes, session ids and API tokens as sha256 digests (both are
high-entropy random strings, see ``server.security.credentials``). The audit log has no foreign keys on purpose:
it records who someone *was* at the time (username, role), and nothing that happens to other tables may
change or block it. Database triggers (migration 0003) refuse UPDATE and DELETE on it.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Enum, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.db.base import Base, utcnow
from server.security.roles import Role as Role  # defined there so the CLI can offer roles without SQLAlchemy


class Outcome(enum.StrEnum):
    allowed = "allowed"
    refused = "refused"


# Tables that grow with every request (or every sign-in try) get 64-bit ids on PostgreSQL; SQLite's INTEGER
# PRIMARY KEY is 64-bit already (and a BIGINT one would not be its rowid alias, so it would not autoincrement).
BigId = BigInteger().with_variant(Integer(), "sqlite")


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(cls, name=name, native_enum=False, length=16, validate_strings=True)


class User(Base):
    __tablename__ = "app_user"  # "user" is a reserved word in PostgreSQL

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, doc="stored lower-case")
    password_hash: Mapped[str] = mapped_column(Text, doc="argon2id, PHC string format")
    role: Mapped[Role] = mapped_column(_enum(Role, "user_role"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    demo: Mapped[bool] = mapped_column(Boolean, default=False, doc="made by `wardwatch demo`: refused in production")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None]


class UserSession(Base):
    """A signed-in browser. The cookie carries a random id; the table keeps only its sha256."""

    __tablename__ = "user_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id", ondelete="CASCADE"), index=True)
    id_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64), doc="sent back in X-CSRF-Token on every write")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(doc="absolute expiry, whatever the activity")
    revoked_at: Mapped[datetime | None]
    client_address: Mapped[str | None] = mapped_column(String(64))

    user: Mapped[User] = relationship()


class ApiToken(Base):
    """A hospital system's credential: acts for ``user`` within ``scopes`` (and never beyond the user's role)."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id", ondelete="CASCADE"), index=True)
    created_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("app_user.id", ondelete="SET NULL"), doc="the admin who made it over REST; None: the CLI")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(String(128))
    scopes: Mapped[list[Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(foreign_keys=[user_id])


class AuthEpoch(Base):
    """One row whose ``value`` database triggers raise whenever a credential may have stopped being good: an API
    token revoked, its expiry or scopes changed, a user disabled or given another role, either deleted (migration
    0014). Every API process caches token look-ups (``server.services.token_cache``) and reads this one value per
    request: a changed value empties its cache, so a revocation takes effect on the next request in every
    process, however it was made (REST, CLI, or SQL by hand)."""

    __tablename__ = "auth_epoch"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class LoginAttempt(Base):
    """One sign-in try, kept in the database so throttling holds across API processes."""

    __tablename__ = "login_attempt"
    __table_args__ = (
        Index("ix_login_attempt_username_at", "username", "at"),
        Index("ix_login_attempt_client_address_at", "client_address", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    client_address: Mapped[str] = mapped_column(String(64))
    succeeded: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditLog(Base):
    """Who did what to which record, when, from where, and whether it was allowed. Append-only."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_object", "object_type", "object_id"),
        Index("ix_audit_log_username", "username"),
        Index("ix_audit_log_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    user_id: Mapped[int | None]
    username: Mapped[str | None] = mapped_column(String(64))
    role: Mapped[str | None] = mapped_column(String(16))
    token_id: Mapped[int | None]
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str | None] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[Outcome] = mapped_column(_enum(Outcome, "audit_outcome"))
    status_code: Mapped[int | None]
    detail: Mapped[str | None] = mapped_column(String(256))
    client_address: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
