"""Device resolution, frame conversion, batched probabilities and the clip scorer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from model.inference import ClipScorer, frames_to_tensor, predict_proba, resolve_device
from model.nets import build_model
from model.weights import InputSpec, LoadedModel


def test_resolve_device() -> None:
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:1")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError):
        resolve_device("toaster")


def test_frames_to_tensor_layout_and_normalisation() -> None:
    spec = InputSpec(frames=2, sample_fps=2.0, size=(5, 4), mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    frames = np.zeros((3, 2, 4, 5, 3), dtype=np.uint8)
    frames[..., 0] = 255
    frames[1, 1, 2, 3] = (0, 51, 102)
    x = frames_to_tensor(frames, spec)
    assert x.shape == (3, 3, 2, 4, 5) and x.dtype == torch.float32
    assert torch.allclose(x[0, 0], torch.ones(2, 4, 5))  # (1 - 0.5) / 0.5
    assert torch.allclose(x[0, 1], torch.full((2, 4, 5), -1.0))  # (0 - 0.25) / 0.25
    torch.testing.assert_close(x[1, :, 1, 2, 3], torch.tensor([-1.0, (0.2 - 0.25) / 0.25, 0.4]))


def test_frames_to_tensor_resizes_to_the_spec_and_validates() -> None:
    spec = InputSpec(frames=2, sample_fps=2.0, size=(8, 6))
    x = frames_to_tensor(np.full((1, 2, 12, 16, 3), 200, dtype=np.uint8), spec)
    assert x.shape == (1, 3, 2, 6, 8)
    torch.testing.assert_close(x, torch.full_like(x, (200 / 255 - 0.45) / 0.225))
    with pytest.raises(ValueError):
        frames_to_tensor(np.zeros((2, 4, 5, 3), dtype=np.uint8), spec)
    with pytest.raises(ValueError):
        frames_to_tensor(np.zeros((1, 2, 4, 5, 3), dtype=np.float32), spec)


def test_predict_proba_batched_matches_whole_and_restores_mode() -> None:
    torch.manual_seed(0)
    model = build_model("tiny3d", num_classes=3)
    model.train()
    x = torch.randn(5, 3, 4, 32, 32)
    whole = predict_proba(model, x)
    chunked = predict_proba(model, x, batch_size=2)
    assert whole.shape == (5, 3) and ((whole > 0) & (whole < 1)).all()
    torch.testing.assert_close(whole, chunked)
    assert model.training, "caller's train mode must be restored"
    soft = predict_proba(model, x, multi_label=False)
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(5))


@dataclass
class _FakeClip:
    index: int
    start: float
    end: float
    frames: np.ndarray


def test_clip_scorer_batches_and_keeps_order() -> None:
    torch.manual_seed(0)
    spec = InputSpec(frames=4, sample_fps=2.0, size=(32, 24))
    model = build_model("tiny3d", num_classes=3).eval()
    loaded = LoadedModel(model=model, arch="tiny3d", class_names=["a", "b", "c"], input_spec=spec)
    rng = np.random.default_rng(0)
    clips = [_FakeClip(i, 2.0 * i, 2.0 * i + 2, rng.integers(0, 255, (4, 24, 32, 3), dtype=np.uint8)) for i in range(5)]
    scorer = ClipScorer(loaded, batch_size=2)
    out = list(scorer.score(iter(clips)))
    assert [c.index for c, _ in out] == [0, 1, 2, 3, 4]
    assert all(p.shape == (3,) for _, p in out)
    direct = predict_proba(model, frames_to_tensor(np.stack([c.frames for c in clips]), spec)).numpy()
    np.testing.assert_allclose(np.stack([p for _, p in out]), direct, rtol=1e-4, atol=1e-5)
    summary = scorer.score_all(clips)
    assert summary.scores.shape == (5, 3)
    np.testing.assert_array_equal(summary.starts, [0, 2, 4, 6, 8])
    assert scorer.score_all([]).scores.shape == (0, 3)
