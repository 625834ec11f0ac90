"""Logger levels the server sets whatever level the operator asked for: libraries whose ordinary log lines
would carry secrets.

httpx logs every request's full URL at INFO (``HTTP Request: POST https://his.example/hook?token=...``), and
httpcore logs connection details at DEBUG; a webhook receiver's URL may carry a token in its query. They are
kept at WARNING (their errors still show), here for the command line and by the webhook sender on import, so
an embedding process (tests, a custom ASGI runner) gets the same.
"""

from __future__ import annotations

import logging

QUIET_LOGGERS = ("httpx", "httpcore")


def quiet_secret_loggers() -> None:
    """At most WARNING from the loggers that would print request URLs."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
