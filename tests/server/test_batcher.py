"""The worker's dynamic batcher (``server.worker.batcher``): batches fill up to the maximum size or the maximum
wait; two recordings scored at once by the embedded pool share forward batches (counted by the batcher and by
its Prometheus histogram), and every stored score equals the unbatched score (batch of one) within 1e-5."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from ingest.clips import iter_clips
from model.inference import ClipScorer
from model.weights import load_checkpoint
from server.bootstrap import make_worker_context
from server.db.session import session_scope
from server.db.tables import Clip
from server.pipeline import clip_spec_for
from server.settings import DEFAULT_MODEL_PATH, Settings
from server.worker.batcher import Batcher
from server.worker.dispatch import EmbeddedDispatcher
from tests.server.faults_support import job_row, register_copy
from tests.server.segments_support import SCORE_TOLERANCE


def _histogram(name: str) -> tuple[float, float]:
    """(batches observed, batches with one recording only) of ``wardwatch_batch_recordings`` so far."""
    count = REGISTRY.get_sample_value(f"{name}_count") or 0.0
    single = REGISTRY.get_sample_value(f"{name}_bucket", {"le": "1.0"}) or 0.0
    return count, single


def test_a_batch_is_full_or_waited_its_time() -> None:
    loaded = load_checkpoint(DEFAULT_MODEL_PATH, device="cpu")
    spec = loaded.input_spec
    frames = np.random.default_rng(1).integers(0, 255, (7, spec.frames, spec.size[1], spec.size[0], 3), np.uint8)
    batcher = Batcher(max_batch=3, max_wait=0.5)
    try:
        futures = [batcher.submit("demo", loaded, clip, tag="r1") for clip in frames]
        scores = np.stack([f.result(timeout=60) for f in futures])
        stats = batcher.stats()
        assert (stats.batches, stats.clips, stats.largest, stats.mixed_batches) == (3, 7, 3, 0)  # 3 + 3 + 1 late
        alone = ClipScorer(loaded, batch_size=1)
        unbatched = np.concatenate([alone.infer(alone.prepare([_Frames(clip)])) for clip in frames])
        assert np.abs(scores - unbatched).max() <= 1e-5
        # a clip of 2 frames in the batch of a clip of 8: the batch cannot be stacked, and both callers hear it
        short, whole = (batcher.submit("demo", loaded, clip, tag="r2") for clip in (frames[0][:2], frames[1]))
        for future in (short, whole):
            with pytest.raises(RuntimeError, match="Sizes of tensors must match"):
                future.result(timeout=60)
        again = batcher.submit("demo", loaded, frames[0], tag="r2").result(timeout=60)  # and goes on serving
        assert np.abs(again - unbatched[0]).max() <= 1e-5
    finally:
        batcher.close()


class _Frames:
    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the batching is the point, not the database
def test_two_recordings_share_forward_batches_and_score_as_unbatched(db_url: str, tmp_path: Path,
                                                                     ward_video) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url=None, device="cpu",
                        score_batch_size=8, score_batch_wait_seconds=0.2)
    ctx = make_worker_context(settings)
    dispatcher = EmbeddedDispatcher(ctx, workers=2)  # both recordings at once, one batcher
    before = _histogram("wardwatch_batch_recordings")
    try:
        recordings = [register_copy(settings, ctx.session_factory, ward_video.video, f"r{n}.mp4") for n in (1, 2)]
        for recording_id, job_id in recordings:
            dispatcher.process_recording(recording_id, job_id)
        dispatcher.wait(timeout=300)
        stats = ctx.batcher().stats()
    finally:
        dispatcher.shutdown()
        ctx.close()
    assert all(job_row(ctx.session_factory, job_id).status == "succeeded" for _, job_id in recordings)
    assert stats.mixed_batches >= 1, stats  # clips of both recordings in one forward pass
    assert stats.largest <= 8 and stats.clips >= 2 * 15
    after = _histogram("wardwatch_batch_recordings")
    assert after[0] - before[0] == stats.batches  # every forward batch went into the metric
    assert (after[0] - before[0]) - (after[1] - before[1]) == stats.mixed_batches  # ... with its recordings

    loaded = load_checkpoint(DEFAULT_MODEL_PATH, device="cpu")
    alone = ClipScorer(loaded, batch_size=1)  # the unbatched reference: one clip per forward pass
    reference = [probs for _, probs in alone.score(iter_clips(ward_video.video, clip_spec_for(loaded, settings)))]
    for recording_id, _ in recordings:
        with session_scope(ctx.session_factory) as session:
            stored = session.scalars(select(Clip.scores).where(Clip.recording_id == recording_id)
                                     .order_by(Clip.index)).all()
        assert len(stored) == len(reference)
        for scores, probs in zip(stored, reference, strict=True):
            assert all(abs(scores[name] - float(p)) <= SCORE_TOLERANCE
                       for name, p in zip(loaded.class_names, probs, strict=True))
