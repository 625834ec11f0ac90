"""GPU-ready scoring: same scores as the plain float32 forward, and a decode thread that never outlives its use.

Tolerances: on CPU the new path (inference mode, decode thread, optional channels-last) must match the eager
float32 ``predict_proba`` path within atol 1e-5 (probabilities; in practice they are equal to ~1e-7). On CUDA,
float16/bfloat16 autocast must match CUDA float32 within atol 1e-2.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from ingest.clips import ClipSpec, IngestReport, iter_clips
from ingest.errors import DecodeError, InvalidVideoError
from model.accel import InferenceOptions
from model.inference import ClipScorer, frames_to_tensor, predict_proba
from model.nets import build_model
from model.prefetch import prefetch
from model.weights import InputSpec, LoadedModel

CPU_ATOL = 1e-5
CUDA_AUTOCAST_ATOL = 1e-2
SPEC = InputSpec(frames=4, sample_fps=2.0, size=(32, 24))


@dataclass
class _Clip:
    index: int
    start: float
    end: float
    frames: np.ndarray


def _loaded(seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    model = build_model("tiny3d", num_classes=3).eval()
    return LoadedModel(model=model, arch="tiny3d", class_names=["a", "b", "c"], input_spec=SPEC)


def _clips(n: int) -> list[_Clip]:
    rng = np.random.default_rng(1)
    return [_Clip(i, 2.0 * i, 2.0 * i + 2, rng.integers(0, 255, (4, 24, 32, 3), dtype=np.uint8)) for i in range(n)]


def _eager(loaded: LoadedModel, clips: list[_Clip]) -> np.ndarray:
    """The old path: one float32 eager forward of all clips."""
    return predict_proba(loaded.model, frames_to_tensor(np.stack([c.frames for c in clips]), SPEC)).numpy()


def _decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "wardwatch-decode"]


@pytest.mark.parametrize("prefetch_batches", [0, 1, 3])
def test_new_path_matches_eager_float32_on_cpu(prefetch_batches: int) -> None:
    loaded, clips = _loaded(), _clips(7)
    expected = _eager(loaded, clips)
    scorer = ClipScorer(loaded, batch_size=3, options=InferenceOptions(prefetch_batches=prefetch_batches))
    assert scorer.options.autocast_dtype is None and not scorer.options.pin_memory  # CPU: plain float32
    out = list(scorer.score(iter(clips)))
    assert [c.index for c, _ in out] == list(range(7))
    np.testing.assert_allclose(np.stack([p for _, p in out]), expected, rtol=0, atol=CPU_ATOL)
    assert not _decode_threads()


def test_reduced_precision_is_cuda_only() -> None:
    cpu = InferenceOptions(precision="float16").resolve(torch.device("cpu"))
    assert cpu.autocast_dtype is None and not cpu.channels_last and not cpu.pin_memory
    cuda = InferenceOptions().resolve(torch.device("cuda"))
    assert cuda.autocast_dtype == torch.float16 and cuda.channels_last and cuda.pin_memory
    assert InferenceOptions(precision="bfloat16").resolve(torch.device("cuda")).autocast_dtype == torch.bfloat16
    assert InferenceOptions(precision="float32").resolve(torch.device("cuda")).autocast_dtype is None
    with pytest.raises(ValueError, match="precision"):
        InferenceOptions(precision="int8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefetch_batches"):
        InferenceOptions(prefetch_batches=-1)


def test_channels_last_does_not_change_scores() -> None:
    loaded, clips = _loaded(), _clips(5)
    expected = _eager(loaded, clips)
    scorer = ClipScorer(loaded, batch_size=2, options=InferenceOptions(channels_last=True))
    conv = next(p for p in loaded.model.parameters() if p.dim() == 5)
    assert conv.is_contiguous(memory_format=torch.channels_last_3d)
    assert scorer.prepare(clips[:2]).is_contiguous(memory_format=torch.channels_last_3d)
    np.testing.assert_allclose(scorer.score_all(clips).scores, expected, rtol=0, atol=CPU_ATOL)
    # the converted model still gives the same scores on the old path (other users of a cached model)
    np.testing.assert_allclose(_eager(loaded, clips), expected, rtol=0, atol=CPU_ATOL)


def test_error_in_the_middle_reaches_the_caller_and_the_thread_ends() -> None:
    clips = _clips(5)
    closed = threading.Event()

    def source() -> Iterator[_Clip]:
        try:
            yield from clips[:3]
            raise DecodeError("could not decode a frame near 6.00 s of ward.mp4")
        finally:
            closed.set()

    scorer = ClipScorer(_loaded(), batch_size=2, options=InferenceOptions(prefetch_batches=2))
    got: list[int] = []
    with pytest.raises(DecodeError, match=r"near 6\.00 s of ward\.mp4"):
        for clip, _ in scorer.score(source()):
            got.append(clip.index)
    assert got == [0, 1]  # the full first batch was scored before the error, the partial one was not
    assert closed.is_set() and not _decode_threads()


def test_consumer_stopping_early_stops_the_thread_and_closes_the_source() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    items = prefetch(endless(), depth=2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert closed.is_set() and not _decode_threads()


def _video(tmp_path: Path) -> Path:
    from ingest.synthetic import SynthConfig, generate

    return generate(tmp_path, SynthConfig(seconds=6, seed=1, width=64, height=48)).video


def test_corrupt_and_truncated_videos_give_todays_errors(tmp_path: Path) -> None:
    video = _video(tmp_path)
    spec = ClipSpec(clip_seconds=2.0, stride_seconds=2.0, sample_fps=2.0, size=(32, 24))
    scorer = ClipScorer(_loaded(), batch_size=2)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"x" * 5000)
    with pytest.raises(InvalidVideoError, match="not a video file: garbage.mp4"):
        list(scorer.score(iter_clips(garbage, spec)))
    assert not _decode_threads()

    truncated = tmp_path / "truncated.mp4"
    data = video.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    reports = IngestReport(), IngestReport()
    eager = [(c.index, _eager(scorer.loaded, [c])[0]) for c in iter_clips(truncated, spec, report=reports[0])]
    threaded = [(c.index, p) for c, p in scorer.score(iter_clips(truncated, spec, report=reports[1]))]
    assert reports[1].errors == reports[0].errors and any("truncated" in e for e in reports[1].errors)
    assert [i for i, _ in threaded] == [i for i, _ in eager] and threaded
    for (_, a), (_, b) in zip(threaded, eager, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=CPU_ATOL)
    assert not _decode_threads()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_cuda_autocast_matches_float32(precision: str) -> None:
    loaded, clips = _loaded(), _clips(6)
    loaded.model.cuda()
    reference = ClipScorer(loaded, batch_size=3, options=InferenceOptions(precision="float32", channels_last=False))
    expected = reference.score_all(clips).scores
    fast = ClipScorer(loaded, batch_size=3, options=InferenceOptions(precision=precision))  # type: ignore[arg-type]
    assert fast.options.pin_memory and fast.options.channels_last
    assert fast.prepare(clips[:3]).is_pinned()
    np.testing.assert_allclose(fast.score_all(clips).scores, expected, rtol=0, atol=CUDA_AUTOCAST_ATOL)
