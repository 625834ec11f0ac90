"""``wardwatch secrets rekey``: re-encrypt every stored secret (stream URLs, webhook signing secrets) with the first
key of WARDWATCH_SECRET_KEYS, the second half of a key rotation (README "Secrets at rest", docs/streams.md,
docs/webhooks.md). ``wardwatch streams rekey`` is the same command under its older name."""

from __future__ import annotations

import argparse


def rekey(_args: argparse.Namespace) -> int:
    from server.cli_access import _audit, _database, _fail
    from server.security.secret_box import SecretUnreadable
    from server.services.secrets_rekey import reencrypt_all
    from server.settings import get_settings

    try:
        with _database() as session:
            counts = reencrypt_all(session=session, box=get_settings().secret_box())  # type: ignore[arg-type]
            detail = " ".join(f"{kind.replace(' ', '_')}s={count}" for kind, count in counts.items())
            _audit(session, "secrets.rekey", "secret", "all", detail=detail)
    except SecretUnreadable as exc:
        return _fail(f"{exc}: keep the old key in WARDWATCH_SECRET_KEYS (after the new one) until this has run; "
                     "nothing was changed")
    done = " and ".join(f"{count} {kind}(s)" for kind, count in counts.items())
    print(f"re-encrypted {done} with the first key")  # noqa: T201 - the command's output
    return 0


def add_secrets_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``secrets`` on the ``wardwatch`` parser."""
    secrets = sub.add_parser("secrets", help="secrets stored encrypted (WARDWATCH_SECRET_KEYS)").add_subparsers(
        dest="secrets_command", required=True)
    p = secrets.add_parser("rekey", help="re-encrypt every stored secret with the first WARDWATCH_SECRET_KEYS key "
                                         "(after a key rotation)")
    p.set_defaults(func=rekey)
