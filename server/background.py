"""The one shape of the API process's background threads (housekeeper, webhook sweeper, folder watcher): a
daemon thread running ``_run`` until ``stop`` sets the event it waits on."""

from __future__ import annotations

import threading


class BackgroundThread:
    """Subclasses implement ``_run``, looping ``while not self._stop.is_set()`` and sleeping with
    ``self._stop.wait(seconds)`` so that ``stop`` ends them at once."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        raise NotImplementedError
