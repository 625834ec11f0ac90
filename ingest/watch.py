"""Watch folder: offer each new, completely written recording exactly once; move failures aside.

Why polling with a settle time instead of inotify: cameras and NVRs often write to network shares
(SMB/NFS) where change notifications are unreliable or absent, and a file appears long before its
writer has finished it. A file is offered only when its size and modification time have not changed
for ``settle_seconds`` between scans. Which files were handed over is persisted (path + size + mtime
in a small JSON state file) so a restarted server does not ingest them again, while a file replaced
by a new recording under the same name (different size or mtime) is offered again.

A pure library: the server polls :meth:`WatchFolder.scan`, creates a recording for each path, then
calls :meth:`WatchFolder.mark_done` (handed over) or :meth:`WatchFolder.mark_failed` (moved aside with
its reason). One :class:`WatchFolder` per folder: claims between ``scan`` and ``mark_*`` live in memory.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_PATTERNS", "STATE_FILE_NAME", "WatchFolder"]

DEFAULT_PATTERNS: tuple[str, ...] = ("*.mp4", "*.m4v", "*.mov", "*.mkv", "*.avi", "*.ts", "*.mts", "*.webm")
STATE_FILE_NAME = ".wardwatch-watch.json"
_STATE_VERSION = 1


@dataclass(frozen=True)
class _Seen:
    """A file's identity at one moment (size in bytes, mtime in ns) and since when it has been so."""

    size: int
    mtime_ns: int
    since: float


class WatchFolder:
    """Finds recordings in ``root`` that are new and completely written.

    Args:
        root: the folder to watch (must exist).
        settle_seconds: a file is offered once its size and mtime stayed unchanged this long (measured
            between scans with ``clock``), so a file still being written is waited for.
        patterns: case-insensitive glob patterns of file names to consider.
        failed_dir: where :meth:`mark_failed` moves files (default ``root/failed``); never scanned.
        state_path: the JSON state file (default ``root/.wardwatch-watch.json``; give another path when
            ``root`` is read-only).
        recursive: also watch sub-folders (hidden ones and ``failed_dir`` excluded).
        clock: monotonic seconds, replaceable in tests.

    Symlinks are ignored (a link could point anywhere on the server), as are hidden files; names such as
    ``x.mp4.part`` (the usual "still copying" names) do not match the default patterns.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        settle_seconds: float = 5.0,
        patterns: Sequence[str] = DEFAULT_PATTERNS,
        failed_dir: str | os.PathLike[str] | None = None,
        state_path: str | os.PathLike[str] | None = None,
        recursive: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"watch folder does not exist: {self.root}")
        if settle_seconds < 0:
            raise ValueError("settle_seconds must not be negative")
        self.settle_seconds = settle_seconds
        self.patterns = tuple(p.lower() for p in patterns)
        self.failed_dir = Path(failed_dir).resolve() if failed_dir is not None else self.root / "failed"
        self.state_path = Path(state_path).resolve() if state_path is not None else self.root / STATE_FILE_NAME
        self.recursive = recursive
        self.clock = clock
        self._seen: dict[str, _Seen] = {}  # relative path -> last observed identity
        self._claimed: dict[str, tuple[int, int]] = {}  # offered, not yet marked: relative path -> identity

    # -- public API -------------------------------------------------------------------------------

    def scan(self) -> list[Path]:
        """Absolute paths of files that are new and have settled, in name order; each is offered once.

        A file offered here is not offered again by this object until it is marked; after a restart a
        file that was offered but never marked is offered again (the server's ingest is idempotent).
        """
        now = self.clock()
        with self._locked_state() as state:
            done = state["done"]
            present: set[str] = set()
            ready: list[Path] = []
            listing_errors: list[OSError] = []
            for path, rel, size, mtime_ns in self._files(listing_errors):
                present.add(rel)
                if rel in self._claimed or _same(done.get(rel), size, mtime_ns):
                    continue
                seen = self._seen.get(rel)
                if seen is None or (seen.size, seen.mtime_ns) != (size, mtime_ns):
                    self._seen[rel] = _Seen(size, mtime_ns, now)  # new or still being written
                    if self.settle_seconds > 0:
                        continue
                    seen = self._seen[rel]
                if now - seen.since >= self.settle_seconds:
                    self._claimed[rel] = (size, mtime_ns)
                    del self._seen[rel]
                    ready.append(path)
            if listing_errors:
                # An unreadable folder (network share hiccup) must not look like deleted files: forgetting
                # them would offer them again once the share is back.
                log.warning("watch folder %s: listing failed (%s); keeping state", self.root, listing_errors[0])
            else:
                self._forget_missing(present, done)
        if ready:
            log.info("watch folder %s: %d new file(s)", self.root, len(ready))
        return sorted(ready)

    def mark_done(self, path: str | os.PathLike[str]) -> None:
        """Record ``path`` as handed over: never offered again while its size and mtime stay the same."""
        rel = self._relative(path)
        identity = self._claimed.pop(rel, None) or _identity(self.root / rel)
        if identity is None:
            log.warning("mark_done: %s no longer exists", rel)
            return
        with self._locked_state() as state:
            state["done"][rel] = {
                "size": identity[0],
                "mtime_ns": identity[1],
                "done_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }

    def mark_failed(self, path: str | os.PathLike[str], reason: str) -> Path | None:
        """Move ``path`` into ``failed_dir`` (keeping sub-folders) with ``<name>.reason.txt`` beside it.

        Returns the new path, or None when the file had already disappeared (the reason is still
        logged). Moving it out means a fixed copy dropped into the folder again is a new file; moving it
        back in retries it.
        """
        rel = self._relative(path)
        self._claimed.pop(rel, None)
        source = self.root / rel
        if not source.exists():
            log.warning("mark_failed: %s no longer exists (reason: %s)", rel, reason)
            return None
        target = _free_name(self.failed_dir / rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), str(target))
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        reason_file = target.with_name(target.name + ".reason.txt")
        reason_file.write_text(f"{reason.rstrip()}\n\nfile: {rel}\nfailed at: {stamp}\n", encoding="utf-8")
        log.warning("watch folder: moved %s to %s: %s", rel, target, reason)
        return target

    # -- internals --------------------------------------------------------------------------------

    def _files(self, errors: list[OSError]) -> Iterator[tuple[Path, str, int, int]]:
        """(path, relative posix path, size, mtime_ns) of candidate files; listing errors go to ``errors``."""
        for dirpath, dirnames, filenames in os.walk(self.root, onerror=errors.append, followlinks=False):
            here = Path(dirpath)
            dirnames[:] = sorted(
                d for d in dirnames if self.recursive and not d.startswith(".") and (here / d) != self.failed_dir
            )
            for name in sorted(filenames):
                if not self._wanted(name):
                    continue
                path = here / name
                try:
                    st = path.lstat()
                except OSError:
                    continue  # vanished between listing and stat
                if not stat.S_ISREG(st.st_mode) or path == self.state_path:
                    continue
                yield path, path.relative_to(self.root).as_posix(), st.st_size, st.st_mtime_ns

    def _wanted(self, name: str) -> bool:
        lower = name.lower()
        return not name.startswith(".") and any(fnmatch.fnmatchcase(lower, p) for p in self.patterns)

    def _relative(self, path: str | os.PathLike[str]) -> str:
        p = Path(path)
        absolute = p if p.is_absolute() else self.root / p
        try:
            return Path(os.path.normpath(absolute)).relative_to(self.root).as_posix()
        except ValueError:
            raise ValueError(f"{path} is not inside the watch folder {self.root}") from None

    def _forget_missing(self, present: set[str], done: dict[str, dict[str, object]]) -> None:
        """Drop state for files that are gone, so the state stays as small as the folder."""
        for rel in [r for r in self._seen if r not in present]:
            del self._seen[rel]
        for rel in [r for r in done if r not in present]:
            del done[rel]

    @contextmanager
    def _locked_state(self) -> Iterator[dict[str, dict[str, dict[str, object]]]]:
        """Load the state under an exclusive lock, let the caller change it, save it atomically if changed."""
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.state_path.with_name(self.state_path.name + ".lock")
        with open(lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._load()
            before = json.dumps(state, sort_keys=True)
            yield state
            if json.dumps(state, sort_keys=True) != before:
                self._save(state)

    def _load(self) -> dict[str, dict[str, dict[str, object]]]:
        try:
            doc = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"done": {}}
        except (OSError, ValueError) as exc:
            # A damaged state file must not stop ingestion; worst case, files are offered once more.
            log.error("watch folder state %s unreadable (%s); starting afresh", self.state_path, exc)
            return {"done": {}}
        done = doc.get("done") if isinstance(doc, dict) else None
        return {"done": done if isinstance(done, dict) else {}}

    def _save(self, state: dict[str, dict[str, dict[str, object]]]) -> None:
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps({"version": _STATE_VERSION, **state}, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.state_path)


def _same(entry: dict[str, object] | None, size: int, mtime_ns: int) -> bool:
    return entry is not None and entry.get("size") == size and entry.get("mtime_ns") == mtime_ns


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _free_name(target: Path) -> Path:
    """``target``, or ``name.1.ext``, ``name.2.ext``, ... if it (or its reason file) already exists."""
    candidate, n = target, 0
    while candidate.exists() or candidate.with_name(candidate.name + ".reason.txt").exists():
        n += 1
        candidate = target.with_name(f"{target.stem}.{n}{target.suffix}")
    return candidate
