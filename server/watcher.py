"""The watch folder: new video files dropped into ``WARDWATCH_WATCH_DIR`` are ingested exactly once.

A thread in the API process polls ``ingest.watch.WatchFolder`` (which waits until a file stops growing and
remembers what it handed over across restarts). Each file goes through the same intake as an upload; a file
that is refused is moved to ``failed/`` beside a ``.reason.txt``. Run it on one API process only.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from ingest.watch import WatchFolder
from server.background import BackgroundThread
from server.db.access_tables import AuditLog, Outcome
from server.services.audit import AuditTarget, RequestInfo, audit_entry
from server.services.intake import IntakeOptions, RecordingRejected, file_sha256, queue_scoring, register_recording
from server.settings import Settings
from server.worker.dispatch import Dispatcher

log = logging.getLogger(__name__)


def _system_entry() -> AuditLog:
    """The watch folder writes recordings too: its entries name it as the actor."""
    return audit_entry(principal=None, target=AuditTarget("watch_folder_import", "recording"),
                       info=RequestInfo(request_id=None, client_address=None), outcome=Outcome.allowed,
                       username="system:watch-folder")


class FolderWatcher(BackgroundThread):
    """Polls the watch folder every ``settings.watch_interval`` seconds until stopped."""

    def __init__(self, settings: Settings, factory: sessionmaker[Session], dispatcher: Dispatcher) -> None:
        assert settings.watch_dir is not None
        self.settings, self.factory, self.dispatcher = settings, factory, dispatcher
        self.folder = WatchFolder(settings.watch_dir, settle_seconds=settings.watch_settle_seconds)
        super().__init__("wardwatch-watch")

    def _run(self) -> None:
        log.info("watching %s", self.folder.root)
        while not self._stop.is_set():
            try:
                self.scan_once()
            except Exception:  # noqa: BLE001 - one bad pass must not end the watcher
                log.exception("watch folder pass failed")
            self._stop.wait(self.settings.watch_interval)

    def scan_once(self) -> int:
        """Ingest what is ready now; returns how many files were handed over."""
        handed = 0
        for path in self.folder.scan():
            try:
                recording, job_id = register_recording(
                    settings=self.settings, factory=self.factory, source=path.name, file=path,
                    sha256=file_sha256(path), size=path.stat().st_size, options=IntakeOptions(),
                    move_into_data_dir=False, audit=_system_entry())
            except RecordingRejected as exc:
                log.warning("watch folder: %s refused: %s", path.name, exc.reason)
                self.folder.mark_failed(path, exc.reason)
                continue
            except OSError as exc:
                self.folder.mark_failed(path, f"could not read the file: {exc}")
                continue
            self.folder.mark_done(path)
            queue_scoring(self.dispatcher, self.factory, recording.id, job_id)
            handed += 1
        return handed
