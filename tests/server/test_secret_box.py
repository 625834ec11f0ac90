"""Secrets at rest: Fernet with rotation, a development key file, production refusing to start without keys."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from server.main import create_app
from server.security.secret_box import SecretBox, SecretKeyMissing, SecretUnreadable, is_encrypted, new_key
from server.settings import Settings


def test_round_trip_and_ciphertext_hides_the_secret() -> None:
    box = SecretBox([new_key()])
    stored = box.encrypt("rtsp://nurse:s3cret@camera-7/stream")
    assert is_encrypted(stored) and "s3cret" not in stored and "camera-7" not in stored
    assert box.decrypt(stored) == "rtsp://nurse:s3cret@camera-7/stream"
    assert box.encrypt("same") != box.encrypt("same")  # random IV: equal secrets do not look equal


def test_rotation_keeps_old_values_readable_and_rotate_moves_them_to_the_new_key() -> None:
    old, new = new_key(), new_key()
    stored = SecretBox([old]).encrypt("webhook-secret")
    rotating = SecretBox([new, old])
    assert rotating.decrypt(stored) == "webhook-secret"
    rotated = rotating.rotate(stored)
    assert SecretBox([new]).decrypt(rotated) == "webhook-secret"
    with pytest.raises(SecretUnreadable):
        SecretBox([new]).decrypt(stored)
    assert SecretBox([new]).rotate("plain, not yet migrated").startswith("fernet:")


def test_a_malformed_key_is_a_clear_error() -> None:
    with pytest.raises(SecretKeyMissing, match="not a Fernet key"):
        SecretBox(["not-a-key"])


def test_development_generates_one_private_key_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = settings.secret_box().encrypt("x")
    key_file = settings.data_dir / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert Settings(data_dir=tmp_path / "data").secret_box().decrypt(first) == "x"  # the same key next time


def test_settings_take_comma_separated_keys_and_never_show_them(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = new_key(), new_key()
    monkeypatch.setenv("WARDWATCH_SECRET_KEYS", f"{a}, {b}")
    settings = Settings()
    assert settings.secret_keys == [a, b]
    assert a not in repr(settings) and b not in repr(settings)


def test_production_refuses_to_start_without_keys(tmp_path: Path) -> None:
    with pytest.raises(SecretKeyMissing, match="WARDWATCH_SECRET_KEYS is required in production"):
        create_app(Settings(data_dir=tmp_path / "data", environment="production", device="cpu"))
    assert not (tmp_path / "data" / "secret.key").exists()


def test_cli_prints_a_usable_key() -> None:
    done = subprocess.run([sys.executable, "-m", "server.cli", "secret-key"], capture_output=True, text=True,
                          check=True)
    SecretBox([done.stdout.strip()]).encrypt("ok")
