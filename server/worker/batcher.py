"""The dynamic batcher of a worker process: one thread owns the model and scores the clips of every task running
in the process, in batches of up to ``max_batch`` clips or whatever arrived within ``max_wait`` seconds of a
batch's first clip, whichever comes first.

Why: a worker runs several segment tasks at once (Celery's thread pool, the embedded pool). Each decoding and
scoring on its own would run many small forward passes on one device and hold a copy of the model's activations
each; one owner of the forward pass fills batches from all of them instead (clips of two recordings share a
batch), which is what a GPU needs to be busy. A clip's score does not depend on its batch-mates (the model is in
eval mode), so batching changes no score beyond float rounding.

Callers hand over decoded clips and get a future per clip (:meth:`Batcher.submit`), or use :meth:`Batcher.score`,
which decodes ahead in a thread of its own, keeps a bounded window of clips in flight and yields ``(clip,
probs)`` in input order. The batcher scores with a *private copy* of each model: explanation rendering puts
hooks on the shared instance of ``ModelCache``, and a forward pass of another thread must never run through them.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import torch

from model.accel import InferenceOptions, to_channels_last
from model.inference import frames_to_tensor
from model.prefetch import prefetch
from model.weights import LoadedModel, load_checkpoint
from server.observability.metrics import observe_batch
from server.observability.scoring import ObservedScorer

__all__ = ["Batcher", "BatcherStats"]

log = logging.getLogger(__name__)

#: model copies a batcher keeps (oldest dropped first), as ``ModelCache`` does
MAX_MODELS = 2


def private_copy(loaded: LoadedModel) -> LoadedModel:
    """A model of the batcher's own, loaded again from the checkpoint file (a deep copy of the shared model could
    catch another thread's explanation hooks on it mid-forward); a deep copy when there is no file."""
    if loaded.path and Path(loaded.path).is_file():
        return load_checkpoint(loaded.path, device=loaded.device)
    return copy.deepcopy(loaded)


@dataclass
class BatcherStats:
    """What the batcher did since it started: forward passes, clips, and passes that mixed recordings."""

    batches: int = 0
    clips: int = 0
    mixed_batches: int = 0  # batches with clips of more than one tag (recording)
    largest: int = 0
    tags_per_batch: list[int] = field(default_factory=list, repr=False)  # the last few hundred, for tests

    @property
    def mean_batch(self) -> float:
        return self.clips / self.batches if self.batches else 0.0


@dataclass
class _Item:
    key: Hashable
    inputs: torch.Tensor  # [1, 3, T, H, W] float32, CPU
    tag: Hashable
    future: Future[np.ndarray]
    queued_at: float


_STOP = object()


class _HasFrames(Protocol):
    frames: np.ndarray


ClipT = TypeVar("ClipT", bound=_HasFrames)


class Batcher:
    """``Batcher(max_batch=8, max_wait=0.05, options=...)``: one per process; thread-safe."""

    def __init__(self, *, max_batch: int, max_wait: float, options: InferenceOptions | None = None) -> None:
        if max_batch < 1 or max_wait < 0:
            raise ValueError("max_batch must be >= 1 and max_wait >= 0")
        self.max_batch, self.max_wait = int(max_batch), float(max_wait)
        self.options = options or InferenceOptions()
        self._scorers: OrderedDict[Hashable, ObservedScorer] = OrderedDict()
        self._queue: queue.Queue[object] = queue.Queue()
        self._held: deque[_Item] = deque()  # clips of another model than the batch being filled
        self._lock = threading.Lock()
        self._stats = BatcherStats()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- callers' side ------------------------------------------------------------------------------------------

    def scorer(self, key: Hashable, loaded: LoadedModel) -> ObservedScorer:
        """The batcher's own scorer of model ``key`` (a private copy of ``loaded``, made once)."""
        with self._lock:
            scorer = self._scorers.get(key)
            if scorer is None:
                while len(self._scorers) >= MAX_MODELS:
                    self._scorers.popitem(last=False)
                scorer = ObservedScorer(private_copy(loaded), batch_size=self.max_batch, options=self.options)
                self._scorers[key] = scorer
            return scorer

    def submit(self, key: Hashable, loaded: LoadedModel, frames: np.ndarray, tag: Hashable = None
               ) -> Future[np.ndarray]:
        """Queue one clip's uint8 frames ``[T, H, W, 3]`` for model ``key``; the future gets its probabilities
        float32 ``[K]``. ``tag`` names where the clip comes from (a recording id): batches count the tags mixed."""
        self.scorer(key, loaded)
        inputs = frames_to_tensor(np.asarray(frames)[None], loaded.input_spec)
        return self._put(key, inputs, tag)

    def score(self, key: Hashable, loaded: LoadedModel, clips: Iterable[ClipT], tag: Hashable = None
              ) -> Iterator[tuple[ClipT, np.ndarray]]:
        """Yield ``(clip, probs)`` for every clip (anything with uint8 ``frames`` ``[T, H, W, 3]``), in input order.

        The clips are decoded and prepared ahead by a thread of their own (``options.prefetch_batches`` batches
        deep), and up to two batches of them wait in the batcher at once, so the batcher can fill a batch while
        this caller commits the previous results. An error of ``clips`` comes out of here unchanged; closing this
        generator early stops the decode thread and drops the clips still queued.
        """
        spec = loaded.input_spec
        self.scorer(key, loaded)
        prepared = ((clip, frames_to_tensor(np.asarray(clip.frames)[None], spec)) for clip in clips)
        ahead = prefetch(prepared, self.options.prefetch_batches * self.max_batch, name="wardwatch-decode")
        window: deque[tuple[ClipT, Future[np.ndarray]]] = deque()
        try:
            for clip, inputs in ahead:
                window.append((clip, self._put(key, inputs, tag)))
                while len(window) > 2 * self.max_batch:
                    done, future = window.popleft()
                    yield done, future.result()
            while window:
                done, future = window.popleft()
                yield done, future.result()
        finally:
            ahead.close()
            for _, future in window:
                future.cancel()

    def stats(self) -> BatcherStats:
        """A copy of the counters."""
        with self._lock:
            return BatcherStats(self._stats.batches, self._stats.clips, self._stats.mixed_batches,
                                self._stats.largest, list(self._stats.tags_per_batch))

    def close(self) -> None:
        """Stop the thread; clips still queued fail with RuntimeError."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._queue.put(_STOP)
        if thread is not None:
            thread.join(timeout=30)

    def _put(self, key: Hashable, inputs: torch.Tensor, tag: Hashable) -> Future[np.ndarray]:
        future: Future[np.ndarray] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wardwatch-batcher", daemon=True)
                self._thread.start()
        self._queue.put(_Item(key, inputs, tag, future, time.monotonic()))
        return future

    # -- the batcher's thread -----------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._collect()
            if batch is None:
                break
            self._forward(batch)
        for item in [*self._held, *self._drain()]:
            item.future.set_exception(RuntimeError("the batcher is closed"))

    def _drain(self) -> list[_Item]:
        left: list[_Item] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return left
            if isinstance(item, _Item):
                left.append(item)

    def _collect(self) -> list[_Item] | None:
        """The next batch: one model's clips, up to ``max_batch``, until ``max_wait`` after the first one queued
        (clips queued while the previous batch ran are taken at once). None once closed."""
        if self._held:
            first = self._held.popleft()
        else:
            got = self._queue.get()
            if got is _STOP:
                return None
            first = got  # type: ignore[assignment]
        batch = [first]
        for item in list(self._held):  # others of the same model held back earlier come next, in order
            if len(batch) < self.max_batch and item.key == first.key:
                self._held.remove(item)
                batch.append(item)
        deadline = first.queued_at + self.max_wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                got = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if got is _STOP:
                self._queue.put(_STOP)  # seen again once this batch is done
                break
            item = got  # type: ignore[assignment]
            if item.key == first.key:
                batch.append(item)
            else:
                self._held.append(item)
        return batch

    def _forward(self, batch: list[_Item]) -> None:
        live = [item for item in batch if item.future.set_running_or_notify_cancel()]
        if not live:
            return
        waited = time.monotonic() - live[0].queued_at
        with self._lock:
            scorer = self._scorers.get(live[0].key)
        try:
            if scorer is None:
                raise RuntimeError(f"model {live[0].key} was dropped from the batcher while clips of it waited")
            inputs = torch.cat([item.inputs for item in live])
            if scorer.options.channels_last:
                inputs = to_channels_last(inputs)
            if scorer.options.pin_memory:
                inputs = inputs.pin_memory()
            probs = scorer.infer(inputs)  # timed and its size counted by ObservedScorer
        except BaseException as exc:  # noqa: BLE001 - each waiting caller gets the error of its batch
            for item in live:
                item.future.set_exception(exc)
            return
        tags = len({item.tag for item in live})
        with self._lock:
            stats = self._stats
            stats.batches += 1
            stats.clips += len(live)
            stats.mixed_batches += tags > 1
            stats.largest = max(stats.largest, len(live))
            stats.tags_per_batch = [*stats.tags_per_batch[-499:], tags]
        observe_batch(recordings=tags, waited=waited)
        for item, row in zip(live, probs, strict=True):
            item.future.set_result(row)
