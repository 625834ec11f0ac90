"""The process's Prometheus metrics (``prometheus-client``), one definition each, and small helpers to record them.

No label carries patient data or a record ID: routes are templates (``/api/v1/events/{event_id}``), the rest
are job kinds, outcomes, decisions and queue names. With ``PROMETHEUS_MULTIPROC_DIR`` set (several API or
worker processes), prometheus-client writes each process's values to files there and ``/metrics`` sums them
(``server.observability.exposition``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOB_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600)

HTTP_LATENCY = Histogram("wardwatch_http_request_duration_seconds", "HTTP requests by route template",
                         ["method", "route", "status"], buckets=LATENCY_BUCKETS)
FRAMES = Counter("wardwatch_ingest_frames_total", "Frames sampled into scored clips (rate(): frames/s)")
CLIPS = Counter("wardwatch_clips_scored_total", "Clips scored and committed (rate(): clips/s)")
INFERENCE = Histogram("wardwatch_inference_seconds", "Model forward pass per batch",
                      buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
BATCH_SIZE = Histogram("wardwatch_inference_batch_size", "Clips per inference batch",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128))
BATCH_RECORDINGS = Histogram("wardwatch_batch_recordings", "Recordings whose clips share one forward batch of a "
                             "worker's batcher", buckets=(1, 2, 3, 4, 6, 8, 16))
BATCH_WAIT = Histogram("wardwatch_batch_wait_seconds", "How long a batch's first clip waited for the batch to fill "
                       "and the model to be free", buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
JOB_DURATION = Histogram("wardwatch_job_duration_seconds", "Jobs by kind and outcome", ["kind", "outcome"],
                         buckets=JOB_BUCKETS)
REVIEWS = Counter("wardwatch_reviews_total", "Clinician reviews recorded (rate() * 3600: per hour)", ["decision"])


def count_clips(frame_counts: Sequence[int]) -> None:
    """Clips committed to the database, with the frames each was made of."""
    CLIPS.inc(len(frame_counts))
    FRAMES.inc(sum(frame_counts))


@contextmanager
def observe_inference(batch_size: int) -> Iterator[None]:
    started = time.perf_counter()
    yield
    INFERENCE.observe(time.perf_counter() - started)
    BATCH_SIZE.observe(batch_size)


def observe_batch(*, recordings: int, waited: float) -> None:
    """A forward batch of the batcher: how many recordings its clips came from, how long its first clip waited
    (its size and latency are in ``wardwatch_inference_*``)."""
    BATCH_RECORDINGS.observe(recordings)
    BATCH_WAIT.observe(waited)


@contextmanager
def observe_job(kind: str) -> Iterator[dict[str, str]]:
    """Time a job; the block may set ``outcome`` in the yielded dict (default ``succeeded``; ``error`` if the
    block raises without having set one, e.g. ``retry`` before raising for a retry)."""
    started = time.monotonic()
    state = {"outcome": "succeeded"}
    try:
        yield state
    except BaseException:
        if state["outcome"] == "succeeded":
            state["outcome"] = "error"
        raise
    finally:
        JOB_DURATION.labels(kind=kind, outcome=state["outcome"]).observe(time.monotonic() - started)
