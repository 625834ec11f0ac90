"""``wardwatch streams rekey``: re-encrypt the stored stream URLs with the first key of WARDWATCH_SECRET_KEYS,
the second half of a key rotation (docs/streams.md)."""

from __future__ import annotations

import argparse


def _rekey(_args: argparse.Namespace) -> int:
    from server.cli_access import _audit, _database, _fail
    from server.security.secret_box import SecretUnreadable
    from server.services.streams import reencrypt_stream_urls
    from server.settings import get_settings

    try:
        with _database() as session:
            count = reencrypt_stream_urls(session=session, box=get_settings().secret_box())  # type: ignore[arg-type]
            _audit(session, "streams.rekey", "job", "stream", detail=f"reencrypted={count}")
    except SecretUnreadable as exc:
        return _fail(f"{exc}: keep the old key in WARDWATCH_SECRET_KEYS (after the new one) until this has run")
    print(f"re-encrypted {count} stream URL(s) with the first key")  # noqa: T201 - the command's output
    return 0


def add_streams_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``streams`` on the ``wardwatch`` parser."""
    streams = sub.add_parser("streams", help="live stream sources").add_subparsers(dest="streams_command",
                                                                                   required=True)
    p = streams.add_parser("rekey", help="re-encrypt stored stream URLs with the first WARDWATCH_SECRET_KEYS key")
    p.set_defaults(func=_rekey)
