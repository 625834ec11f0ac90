"""Password hashing with argon2id (argon2-cffi), never hand-written crypto.

argon2id is memory-hard, so a stolen ``app_user`` table costs an attacker far more per guess than a fast hash
would. The library's defaults follow RFC 9106's recommendations; ``needs_rehash`` lets a later change of
parameters upgrade stored hashes at the next successful sign-in.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 12
MAX_LENGTH = 256  # argon2 takes any length; a cap stops a 10 MB "password" from costing us 10 MB of hashing

_hasher = PasswordHasher()
# Verified when the username does not exist, so a wrong username takes as long as a wrong password and the
# timing does not tell an attacker which usernames are real.
_DUMMY_HASH = _hasher.hash("wardwatch-no-such-user-timing-equaliser")


class WeakPasswordError(ValueError):
    """The password does not meet the length rule."""


def check_strength(password: str) -> None:
    """Length is what counts (NIST SP 800-63B); composition rules only make passwords predictable."""
    if len(password) < MIN_LENGTH:
        raise WeakPasswordError(f"password must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPasswordError(f"password must have at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    """An argon2id hash in PHC string format (parameters and salt included)."""
    check_strength(password)
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; ``stored_hash=None`` (unknown user) still spends the time of a check."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """The hash was made with weaker parameters than today's: re-hash it at this sign-in."""
    return _hasher.check_needs_rehash(stored_hash)
