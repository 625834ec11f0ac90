"""Atomic file writes: readers (another process, a resumed run) never see a torn or half-written file."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path"]


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on a normal exit it replaces ``target``.

    Write the file to the yielded path inside the block. The temporary name is unique per process
    and thread, so concurrent writers of the same cache (two experiment processes sharing a work
    folder) never write into each other's file; the last ``os.replace`` wins with a whole file.
    On an exception the temporary file is removed and ``target`` is left as it was. ``suffix``
    ends the temporary name (``np.savez`` appends ``.npz`` to a name without it).
    """
    final = Path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
