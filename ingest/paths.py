"""Server-side import paths: turn a user-supplied path into a real file *inside* the import directory.

Why: "import /srv/cameras/room12/2024-05-01.mp4" is convenient for hospital integrations, but a path
parameter is also the classic way to make a server read ``/etc/shadow`` or another patient's folder.
Every path is resolved the way the operating system will resolve it (all symlinks followed) and must
land inside the resolved root; ``..`` components are refused outright, even when they would stay
inside, so that what the user typed is what gets audited.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from ingest.errors import UnsafePathError

__all__ = ["resolve_import_path"]


def resolve_import_path(root: str | os.PathLike[str], user_path: str | os.PathLike[str]) -> Path:
    """Resolve ``user_path`` against ``root``, refusing anything that is not a regular file inside it.

    Args:
        root: the configured import directory (must exist).
        user_path: relative to ``root`` (``"room12/night.mp4"``), or absolute but inside ``root``.

    Returns:
        The fully resolved path (every symlink followed). Open this path, not the user's string: the
        check is about this exact path.

    Raises:
        UnsafePathError: (an :class:`InvalidVideoError` and a :class:`ValueError`) empty path, NUL byte,
            ``..`` component, absolute path outside ``root``, a symlink pointing outside ``root``, a
            missing file, or something that is not a regular file (directory, device, FIFO).
    """
    try:
        base = Path(root).resolve(strict=True)
    except OSError as exc:
        raise UnsafePathError(f"import directory is not available: {exc.strerror or exc}") from None
    if not base.is_dir():
        raise UnsafePathError("import directory is not a directory")
    raw = os.fspath(user_path)
    if not isinstance(raw, str) or not raw.strip():
        raise UnsafePathError("import path is empty")
    if "\x00" in raw:
        raise UnsafePathError("import path contains a NUL byte")
    parts = PurePosixPath(raw.replace("\\", "/")).parts
    if ".." in parts:
        raise UnsafePathError(f"import path must not contain '..': {raw}")
    candidate = Path(raw)
    if candidate.is_absolute():
        # Compare the *unresolved* absolute path too: "/import/../etc" was refused above, and an
        # absolute path must at least be spelled inside the root (or inside its resolved form).
        spelled = Path(os.path.normpath(candidate))
        unresolved_root = Path(os.path.abspath(root))
        if not (spelled.is_relative_to(base) or spelled.is_relative_to(unresolved_root)):
            raise UnsafePathError(f"import path is outside the import directory: {raw}")
    else:
        candidate = base / candidate
    try:
        resolved = candidate.resolve(strict=True)
    except FileNotFoundError:
        raise UnsafePathError(f"import file not found: {raw}") from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop on older Pythons
        raise UnsafePathError(f"cannot resolve import path {raw}: {exc}") from None
    if not resolved.is_relative_to(base):
        raise UnsafePathError(f"import path leads outside the import directory (symlink?): {raw}")
    try:
        mode = resolved.stat().st_mode
    except OSError as exc:
        raise UnsafePathError(f"cannot read import file {raw}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise UnsafePathError(f"import path is not a regular file: {raw}")
    return resolved
