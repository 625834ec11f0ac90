"""Stream URLs as text: which ones may be opened at all, and how they are shown without their secrets.

Why a module of its own: the same URL is checked by the API at submission, by the destination policy before
every connection and by the reader, and is shown (redacted) in responses, logs and error messages. A camera
URL often carries a password (``rtsp://admin:pw@cam/``) or a signed query (``?token=...``): both must stay out
of everything but the one call that opens the stream.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ingest.errors import InvalidVideoError

__all__ = ["ALLOWED_SCHEMES", "MASK", "redact_url", "scrub", "validate_stream_url"]

#: Every scheme the reader can open. A caller narrows it (the server refuses ``udp``: it listens on a local port
#: instead of connecting to a camera, so there is no destination to check).
ALLOWED_SCHEMES: tuple[str, ...] = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "tcp", "udp")
MASK = "***"
# Query parameters that would turn the client into a server or make FFmpeg write instead of read.
_FORBIDDEN_QUERY = frozenset({"listen", "listen_timeout"})


def redact_url(url: str) -> str:
    """``url`` as it may be shown: user name and password become ``***@``, every query value ``***`` (keys are
    kept, a bare ``?token`` is masked whole), the fragment is dropped; scheme, host, port and path stay so an
    admin can tell streams apart. A URL that does not parse is shown as ``***``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return MASK
    if not parts.scheme or not parts.netloc:
        return url if "?" not in url and "@" not in url else MASK
    host = f"[{host}]" if ":" in host else host
    netloc = (f"{MASK}@" if "@" in parts.netloc else "") + host + (f":{port}" if port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, _masked_query(parts.query), ""))


def _masked_query(query: str) -> str:
    if not query:
        return ""
    fields = []
    for field in query.split("&"):
        key, sep, _value = field.partition("=")
        fields.append(f"{key}={MASK}" if sep and key else MASK)
    return "&".join(fields)


def scrub(text: str, url: str) -> str:
    """``text`` without the secrets of ``url``: the URL itself becomes its redacted form, and the password, user
    name and query values are masked wherever else they appear (FFmpeg errors quote URLs, sometimes decoded)."""
    redacted = redact_url(url)
    text = text.replace(url, redacted)
    try:
        parts = urlsplit(url)
        secrets = [parts.password, parts.username]
    except ValueError:
        return text.replace(url, MASK)
    secrets += [value for _key, value in parse_qsl(parts.query, keep_blank_values=True)]
    secrets += [field for field in parts.query.split("&") if field and "=" not in field]
    # Longest first, so a password that contains the user name is masked whole. Very short values (a query
    # flag such as ``=1``) would mask half of every message and are not secrets.
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    if parts.password:  # the password is a secret whatever its length
        text = text.replace(f":{parts.password}@", f":{MASK}@")
    return text


def validate_stream_url(url: str, schemes: tuple[str, ...] = ALLOWED_SCHEMES) -> str:
    """Return ``url`` if it is a stream URL we may open, else raise :class:`InvalidVideoError`.

    Refused: any scheme not in ``schemes`` (``file:``, ``concat:``, ``subfile:``, ``data:``, ``pipe:``, ...), a
    missing or malformed host or port, control characters, and ``listen`` options that would make the server
    accept connections instead of reading a stream. Messages never quote the URL's credentials or query.
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidVideoError("stream URL is empty")
    if any(ord(ch) < 32 or ch.isspace() or ord(ch) == 127 for ch in url):
        raise InvalidVideoError("stream URL contains whitespace or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        shown = scheme or "none"
        raise InvalidVideoError(f"unsupported stream URL scheme {shown!r}: use one of {', '.join(schemes)}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as err:
        raise InvalidVideoError(f"stream URL has an invalid port: {redact_url(url)}") from err
    if scheme != "udp" and not parts.hostname:
        raise InvalidVideoError(f"stream URL has no host: {redact_url(url)}")
    if any(key.lower() in _FORBIDDEN_QUERY for key, _ in parse_qsl(parts.query, keep_blank_values=True)):
        raise InvalidVideoError("stream URL must not ask to listen for connections")
    return url
