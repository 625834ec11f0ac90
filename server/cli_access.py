"""``wardwatch users ...``, ``wardwatch tokens ...`` and ``wardwatch sessions purge``: bootstrap and manage
accounts from a shell on the server, against the configured database (migrated first, as ``serve`` does).

A new token is printed once, alone on the last line, so scripts can take it with ``tail -n 1``; only its
digest is stored, so it cannot be shown again.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

CLI_ACTOR = "system:cli"  # the audit trail's username for what an operator does from a shell on the server


@contextmanager
def _database() -> Iterator[object]:
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)  # migrations run quietly under these commands
    from server.db import migrate
    from server.db.session import make_engine, make_session_factory, session_scope
    from server.settings import get_settings

    settings = get_settings()
    settings.ensure_dirs()
    if settings.auto_migrate:
        migrate.upgrade(settings.sqlalchemy_url, secret_box=settings.secret_box)
    engine = make_engine(settings.sqlalchemy_url)
    factory = make_session_factory(engine)
    try:
        with session_scope(factory) as session:
            yield session
    finally:
        engine.dispose()


def _audit(session: object, action: str, object_type: str, object_id: object, detail: str | None = None) -> None:
    """Record a CLI write in the same transaction as the write, as ``system:cli`` (no user signed in)."""
    import getpass

    from server.db.access_tables import Outcome
    from server.services.audit import AuditTarget, RequestInfo, audit_entry, record

    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    target = AuditTarget(action=action, object_type=object_type, object_id=str(object_id))
    entry = audit_entry(principal=None, target=target, info=RequestInfo(request_id=None, client_address=None),
                        outcome=Outcome.allowed, username=CLI_ACTOR,
                        detail=" ".join(filter(None, [detail, f"os_user={who}"])))
    record(session=session, entry=entry)  # type: ignore[arg-type]


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _users_create(args: argparse.Namespace) -> int:
    from server.security.passwords import WeakPasswordError
    from server.services.errors import ConflictError
    from server.services.users import create_user

    try:
        with _database() as session:
            user = create_user(session=session, username=args.username, password=args.password,  # type: ignore[arg-type]
                               role=args.role)
            _audit(session, "cli_users_create", "user", user.id, f"username={user.username} role={user.role.value}")
            print(f"created {user.role.value} {user.username!r} (id {user.id})")
    except (ConflictError, WeakPasswordError, ValueError) as exc:
        return _fail(str(exc))
    return 0


def _users_list(_args: argparse.Namespace) -> int:
    from server.services.users import list_users

    with _database() as session:
        users = list_users(session=session)  # type: ignore[arg-type]
        print(f"{'id':>4}  {'username':<24} {'role':<10} {'state':<9} created")
        for user in users:
            state = "active" if user.active else "disabled"
            demo = " (demo)" if user.demo else ""
            print(f"{user.id:>4}  {user.username:<24} {user.role.value:<10} {state:<9} "
                  f"{user.created_at:%Y-%m-%d %H:%M}{demo}")
    return 0


def _users_disable(args: argparse.Namespace) -> int:
    from server.services.errors import ConflictError, NotFoundError
    from server.services.users import disable_user

    try:
        with _database() as session:
            user = disable_user(session=session, username=args.username)  # type: ignore[arg-type]
            _audit(session, "cli_users_disable", "user", user.id, f"username={user.username}")
            print(f"disabled {user.username!r}: its sessions and tokens stop working now")
    except (NotFoundError, ConflictError) as exc:
        return _fail(str(exc))
    return 0


def _tokens_create(args: argparse.Namespace) -> int:
    from server.services.api_tokens import create_token
    from server.services.errors import NotFoundError
    from server.settings import get_settings

    if args.expires_days is not None and args.expires_days < 0:
        return _fail("--expires-days must be 0 (never) or more")
    days = args.expires_days if args.expires_days is not None else get_settings().token_default_expiry_days
    try:
        with _database() as session:
            token, secret = create_token(session=session, username=args.user, scopes=args.scopes,  # type: ignore[arg-type]
                                         expires_days=days or None, name=args.name)
            _audit(session, "cli_tokens_create", "api_token", token.id,
                   f"username={token.user.username} scopes={' '.join(token.scopes)}")
            expiry = f"expires {token.expires_at:%Y-%m-%d %H:%M} UTC" if token.expires_at else "never expires"
            print(f"token {token.id} for {args.user!r}, scopes {' '.join(token.scopes)}, {expiry}")
            print("shown once, store it now:")
            print(secret)
    except (NotFoundError, ValueError) as exc:
        return _fail(str(exc))
    return 0


def _tokens_revoke(args: argparse.Namespace) -> int:
    from server.services.api_tokens import revoke_token
    from server.services.errors import NotFoundError

    try:
        with _database() as session:
            token = revoke_token(session=session, token_id=args.id)  # type: ignore[arg-type]
            _audit(session, "cli_tokens_revoke", "api_token", token.id)
            print(f"revoked token {token.id}")
    except NotFoundError as exc:
        return _fail(str(exc))
    return 0


def _tokens_list(_args: argparse.Namespace) -> int:
    from server.db.base import utcnow
    from server.services.api_tokens import list_tokens

    now = utcnow()
    with _database() as session:
        print(f"{'id':>4}  {'user':<24} {'state':<8} {'expires':<17} scopes")
        for token in list_tokens(session=session):  # type: ignore[arg-type]
            state = ("revoked" if token.revoked_at else
                     "expired" if token.expires_at and token.expires_at <= now else "active")
            expires = f"{token.expires_at:%Y-%m-%d %H:%M}" if token.expires_at else "never"
            print(f"{token.id:>4}  {token.user.username:<24} {state:<8} {expires:<17} {' '.join(token.scopes)}")
    return 0


def _sessions_purge(_args: argparse.Namespace) -> int:
    from server.services.housekeeping import purge_expired
    from server.settings import get_settings

    with _database() as session:
        purged = purge_expired(session=session, settings=get_settings())  # type: ignore[arg-type]
        _audit(session, "cli_sessions_purge", "session", "expired",
               f"sessions={purged.sessions} login_attempts={purged.login_attempts}")
        print(f"purged {purged}")
    return 0


def _sub(parent: argparse.ArgumentParser, dest: str) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    return parent.add_subparsers(dest=dest, required=True)


def add_access_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``users``, ``tokens`` and ``sessions`` on the ``wardwatch`` parser."""
    from server.security.roles import Role, Scope  # not the tables: no SQLAlchemy to build the parser

    roles, scopes = [r.value for r in Role], [s.value for s in Scope]

    def command(group: argparse._SubParsersAction, name: str, helptext: str,  # type: ignore[type-arg]
                func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        parser = group.add_parser(name, help=helptext)
        parser.set_defaults(func=func)
        return parser

    users = _sub(sub.add_parser("users", help="user accounts (clinician, admin, auditor)"), "users_command")
    p = command(users, "create", "create a user", _users_create)
    p.add_argument("--username", required=True)
    p.add_argument("--password", required=True, help="at least 12 characters")
    p.add_argument("--role", required=True, choices=roles)
    command(users, "list", "list users", _users_list)
    p = command(users, "disable", "disable a user (sessions and tokens stop working)", _users_disable)
    p.add_argument("username")

    tokens = _sub(sub.add_parser("tokens", help="API tokens for hospital systems"), "tokens_command")
    p = command(tokens, "create", "create a token (printed once, on the last line)", _tokens_create)
    p.add_argument("--user", required=True)
    p.add_argument("--scopes", required=True, nargs="+", choices=scopes)
    p.add_argument("--expires-days", type=int, default=None,
                   help="default WARDWATCH_TOKEN_DEFAULT_EXPIRY_DAYS (90); 0 = never")
    p.add_argument("--name", default=None, help="what the token is for, e.g. the system that uses it")
    command(tokens, "list", "list tokens (never their values)", _tokens_list)
    p = command(tokens, "revoke", "revoke a token at once", _tokens_revoke)
    p.add_argument("id", type=int)

    sessions = _sub(sub.add_parser("sessions", help="browser sessions and sign-in tries"), "sessions_command")
    command(sessions, "purge", "delete ended sessions and sign-in tries older than the throttle window (the "
            "server also does this at start-up and every WARDWATCH_PURGE_INTERVAL_MINUTES)", _sessions_purge)
