"""Encryption at rest for the few secrets the server must read back (stream URLs with credentials, webhook
signing secrets), with Fernet (AES-128-CBC + HMAC-SHA256) from the ``cryptography`` library.

Why encrypt and not hash: a camera password or a webhook secret is *used* later (to open the stream, to sign a
delivery), so a digest would not do. Why keys live outside the database: a copy of the database (a backup, a
dump handed to support) must not carry the means to read its secrets.

Keys: ``WARDWATCH_SECRET_KEYS``, comma-separated Fernet keys (``wardwatch secret-key`` prints a new one). The
first encrypts, all decrypt (:class:`cryptography.fernet.MultiFernet`), so a key is rotated by putting the new
one first and keeping the old one until :meth:`SecretBox.rotate` has re-encrypted every value. Development
without keys: one key is generated into ``data_dir/secret.key`` (mode 0600), so the demo needs no setup;
production refuses to start without keys in the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

KEY_FILE_NAME = "secret.key"
PREFIX = "fernet:"  # marks an encrypted value, so a column can be migrated value by value


class SecretKeyMissing(RuntimeError):
    """Production without ``WARDWATCH_SECRET_KEYS``."""


class SecretUnreadable(ValueError):
    """A stored secret that none of the configured keys opens (wrong or missing key after a restore)."""


def new_key() -> str:
    return Fernet.generate_key().decode("ascii")


def _key_file(data_dir: Path) -> list[str]:
    """The development key, created once with owner-only permissions."""
    path = data_dir / KEY_FILE_NAME
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(new_key() + "\n")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


class SecretBox:
    """Encrypts and decrypts short text secrets with the configured keys."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise SecretKeyMissing("no secret key configured")
        try:
            self._fernet = MultiFernet([Fernet(key.encode("ascii")) for key in keys])
        except (ValueError, UnicodeEncodeError) as err:
            raise SecretKeyMissing(
                "WARDWATCH_SECRET_KEYS holds a value that is not a Fernet key (32 url-safe base64 bytes; "
                "`wardwatch secret-key` prints one)") from err

    @classmethod
    def from_settings(cls, keys: list[str], data_dir: Path, *, production: bool) -> SecretBox:
        if keys:
            return cls(keys)
        if production:
            raise SecretKeyMissing(
                "WARDWATCH_SECRET_KEYS is required in production (stream credentials and webhook secrets are "
                "encrypted with it); `wardwatch secret-key` prints a new key")
        return cls(_key_file(data_dir))

    def encrypt(self, plain: str) -> str:
        return PREFIX + self._fernet.encrypt(plain.encode("utf-8")).decode("ascii")

    def decrypt(self, stored: str) -> str:
        """The plain text of an encrypted value; a value without the prefix is returned as it is (not yet
        migrated)."""
        if not stored.startswith(PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored[len(PREFIX):].encode("ascii")).decode("utf-8")
        except InvalidToken as err:
            raise SecretUnreadable("a stored secret cannot be decrypted with the configured keys") from err

    def rotate(self, stored: str) -> str:
        """Re-encrypt with the first key (after a key rotation); plain values get encrypted."""
        if not stored.startswith(PREFIX):
            return self.encrypt(stored)
        try:
            return PREFIX + self._fernet.rotate(stored[len(PREFIX):].encode("ascii")).decode("ascii")
        except InvalidToken as err:
            raise SecretUnreadable("a stored secret cannot be decrypted with the configured keys") from err


def is_encrypted(stored: str) -> bool:
    return stored.startswith(PREFIX)
