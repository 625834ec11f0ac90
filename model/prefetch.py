"""Run an iterator in a background thread, handing its items over through a bounded queue.

Why: decoding a video (FFmpeg, in C, releasing the GIL) and the model's forward pass (ATen, also
without the GIL) can run at the same time; a bounded queue keeps memory at ``depth`` items ahead.
The thread never outlives the consumer: an error in the source is raised in the consumer unchanged
(same exception, same message, so callers report exactly what they did before), and closing the
consumer early (an exception, ``break``) stops the thread and closes the source before returning.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["prefetch"]

T = TypeVar("T")

_POLL_SECONDS = 0.05
_DONE = object()


class _Failure:
    """The exception that ended the source, carried to the consumer's thread."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _put(q: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    """Put ``item`` unless the consumer has gone; False when it has."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False


def prefetch(source: Iterable[T], depth: int, *, name: str = "wardwatch-decode") -> Iterator[T]:
    """Yield ``source``'s items, produced up to ``depth`` ahead by a thread (``depth`` 0: no thread).

    The thread starts at the first ``next()`` and is joined when this generator ends for any reason.
    """
    if depth <= 0:
        yield from source
        return
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        it = iter(source)
        try:
            for item in it:
                if not _put(q, item, stop):
                    return
            _put(q, _DONE, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            _put(q, _Failure(exc), stop)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # the source's own clean-up (open containers) runs in the thread that ran it

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                break
        thread.join()
