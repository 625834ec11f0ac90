"""resolve_import_path: only regular files inside the import directory, with real symlinks."""

from __future__ import annotations

import os

import pytest

from ingest.errors import InvalidVideoError, UnsafePathError
from ingest.paths import resolve_import_path


@pytest.fixture
def tree(tmp_path):
    """import/ with a video, a sub-folder, symlinks in and out; a secret file outside."""
    root = tmp_path / "import"
    (root / "room12").mkdir(parents=True)
    video = root / "room12" / "night.mp4"
    video.write_bytes(b"\x00" * 10)
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"\x00" * 10)
    (root / "inside-link.mp4").symlink_to(video)
    (root / "outside-link.mp4").symlink_to(secret)
    (root / "outside-dir").symlink_to(tmp_path, target_is_directory=True)
    (root / "relative-out.mp4").symlink_to(os.path.join("..", "secret.mp4"))
    (root / "loop.mp4").symlink_to(root / "loop.mp4")
    return root, video, secret


def test_relative_and_absolute_paths_inside(tree):
    root, video, _ = tree
    assert resolve_import_path(root, "room12/night.mp4") == video
    assert resolve_import_path(str(root), str(video)) == video
    assert resolve_import_path(root, "./room12//night.mp4") == video
    assert resolve_import_path(root, "inside-link.mp4") == video  # a symlink that stays inside is fine


@pytest.mark.parametrize(
    ("user_path", "message"),
    [
        ("../secret.mp4", "'..'"),
        ("room12/../../secret.mp4", "'..'"),
        ("room12/../room12/night.mp4", "'..'"),  # refused even though it stays inside
        ("outside-link.mp4", "outside the import directory"),
        ("relative-out.mp4", "outside the import directory"),
        ("outside-dir/secret.mp4", "outside the import directory"),
        ("room12", "not a regular file"),
        ("missing.mp4", "not found"),
        ("loop.mp4", "cannot resolve"),
        ("", "empty"),
        ("room12/night.mp4\x00.txt", "NUL"),
        ("..\\secret.mp4", "'..'"),
    ],
)
def test_refused(tree, user_path, message):
    root, _, _ = tree
    with pytest.raises(UnsafePathError, match=message) as excinfo:
        resolve_import_path(root, user_path)
    assert isinstance(excinfo.value, InvalidVideoError) and isinstance(excinfo.value, ValueError)


def test_absolute_paths_outside(tree):
    root, _, secret = tree
    for path in (secret, "/etc/passwd", root.parent / "import-other" / "x.mp4"):
        with pytest.raises(UnsafePathError, match="outside the import directory"):
            resolve_import_path(root, path)


def test_root_through_a_symlink(tree, tmp_path):
    root, video, _ = tree
    alias = tmp_path / "alias"
    alias.symlink_to(root, target_is_directory=True)
    assert resolve_import_path(alias, "room12/night.mp4") == video
    assert resolve_import_path(alias, alias / "room12" / "night.mp4") == video


def test_missing_root(tmp_path):
    with pytest.raises(UnsafePathError, match="import directory"):
        resolve_import_path(tmp_path / "nope", "a.mp4")
