"""``wardwatch streams rekey``: the older name of ``wardwatch secrets rekey`` (server/cli_secrets.py), which
re-encrypts every stored secret, stream URLs and webhook secrets alike (docs/streams.md)."""

from __future__ import annotations

import argparse

from server.cli_secrets import rekey


def add_streams_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``streams`` on the ``wardwatch`` parser."""
    streams = sub.add_parser("streams", help="live stream sources").add_subparsers(dest="streams_command",
                                                                                   required=True)
    p = streams.add_parser("rekey", help="same as `wardwatch secrets rekey`: re-encrypt every stored secret "
                                         "(stream URLs and webhook secrets) with the first WARDWATCH_SECRET_KEYS key")
    p.set_defaults(func=rekey)
