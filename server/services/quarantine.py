"""Rejected uploads (not a usable video, truncated) are kept for diagnosis in a bounded quarantine folder.

Deleting them at once would leave nothing to look at when a camera vendor's export is refused; keeping them
where they landed let an anonymous sender fill the disk 4 GiB at a time (one failed recording each). So the
file moves to ``data_dir/quarantine`` under its recording's id, and the folder is pruned to
``quarantine_max_bytes``, oldest first; a file larger than the cap on its own (or any file with a cap of 0) is
deleted instead. Uploads refused before they were complete (too large, stalled, malformed) never get here:
the upload code removes their partial file.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_LOCK = threading.Lock()  # one pruner at a time in this process; other processes only ever find a file gone


def quarantine(file: Path, directory: Path, *, name: str, cap_bytes: int) -> Path | None:
    """Move ``file`` to ``directory/name`` and prune the folder to ``cap_bytes``; returns where it is kept, or
    None when it was deleted instead."""
    size = file.stat().st_size
    if size > cap_bytes:
        file.unlink(missing_ok=True)
        return None
    with _LOCK:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / name
        file.replace(target)
        os.utime(target)  # the time of the rejection orders the removals, not the upload's own mtime
        prune(directory, cap_bytes, keep=target)
    return target


def prune(directory: Path, cap_bytes: int, *, keep: Path | None = None) -> list[Path]:
    """Remove the oldest files of ``directory`` until the rest fit in ``cap_bytes`` (``keep`` last of all)."""
    entries = []
    for path in directory.iterdir():
        try:
            stat = path.stat()
        except FileNotFoundError:  # pruned by another process meanwhile
            continue
        if path.is_file():
            entries.append((path == keep, stat.st_mtime_ns, path.name, path, stat.st_size))
    entries.sort()
    total = sum(entry[-1] for entry in entries)
    removed = []
    for *_order, path, size in entries:
        if total <= cap_bytes:
            break
        path.unlink(missing_ok=True)
        total -= size
        removed.append(path)
    return removed
