"""Random credentials (API tokens, session ids, CSRF tokens) and the digests we store instead of them.

Why sha256 and not argon2 for these: they are 256-bit random strings from ``secrets.token_urlsafe``, not
human-chosen passwords. Nobody can guess or brute-force a preimage of 2**256 possibilities, so a slow hash
would add nothing but latency to every request, while a fast, unsalted digest can be looked up through a
unique index. A leaked table therefore yields no usable token or session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "ww_"  # lets secret scanners (and people) recognise a leaked Wardwatch token
TOKEN_BYTES = 32


def new_api_token() -> str:
    """A fresh API token: shown to its owner once, stored only as ``digest(token)``."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def new_session_id() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def digest(secret: str) -> str:
    """Hex sha256 of a high-entropy secret (see the module docstring for why that suffices)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison, so response timing does not reveal how much of a guess was right."""
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))
