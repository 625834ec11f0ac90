"""``finetune()``, the server's entry: checkpoint in, candidate out, progress, cancel, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.nets import build_model
from model.training.finetune import TrainingCancelled, finetune
from model.training.loop import TrainProgress
from model.training.sources import ReviewedClip, labels_from_review
from model.weights import InputSpec, load_checkpoint, save_checkpoint

NAMES = ["bed_exit", "fall"]
SPEC = InputSpec(frames=2, sample_fps=1.0, size=(16, 12), multi_label=True)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def base(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "base.pt"
    save_checkpoint(path, model=build_model("tiny3d", num_classes=2), arch="tiny3d", class_names=NAMES, input_spec=SPEC)
    return path


def _clip(seed: int, label: str | None) -> ReviewedClip:
    """A clip whose left (bed_exit) or right (fall) half is bright; loader makes frames on demand."""

    def load() -> np.ndarray:
        rng = np.random.default_rng(seed)
        frames = rng.integers(0, 50, size=(2, 12, 16, 3), dtype=np.uint8)
        if label == "bed_exit" or (label is None and seed % 2):
            frames[:, :, :8] += 150
        else:
            frames[:, :, 8:] += 150
        return frames

    labels = None if label is None else labels_from_review(NAMES, positives=[label])
    return ReviewedClip(labels=labels, load=load, group=seed)


def _data() -> tuple[list[ReviewedClip], list[ReviewedClip], list[ReviewedClip]]:
    labelled = [_clip(i, NAMES[i % 2]) for i in range(4)]
    unlabelled = [_clip(100 + i, None) for i in range(8)]
    validation = [_clip(200 + i, NAMES[i % 2]) for i in range(4)]
    return labelled, unlabelled, validation


HYPER = {"epochs": 2, "lr": 1e-3, "batch_size": 2, "unlabelled_batch_size": 4, "alpha": 2.0, "progress": False}


def test_finetune_writes_a_loadable_candidate_with_metrics(base: Path, tmp_path: Path) -> None:
    labelled, unlabelled, validation = _data()
    events: list[TrainProgress] = []
    out = tmp_path / "models" / "candidate.pt"
    result = finetune(
        base,
        out_path=out,
        labelled=labelled,
        unlabelled=unlabelled,
        validation=validation,
        mode="alternating",
        hyperparameters={**HYPER, "atcon": {"detach_mask": True}, "log_every": 1},
        on_progress=events.append,
        device="cpu",
    )
    loaded = load_checkpoint(out, device="cpu")
    assert loaded.sha256 == result.sha256 and loaded.class_names == NAMES and loaded.input_spec == SPEC
    ft = loaded.metrics["finetune"]
    assert ft["mode"] == "alternating" and ft["hyperparameters"]["atcon"]["detach_mask"] is True
    assert ft["labelled"] == 4 and ft["unlabelled"] == 8
    assert set(result.comparison) == {"base", "candidate", "diff_macro_f1"}
    assert result.comparison["diff_macro_f1"] == pytest.approx(
        result.comparison["candidate"]["macro_f1"] - result.comparison["base"]["macro_f1"]
    )
    assert loaded.metrics["val_macro_f1"] == result.comparison["candidate"]["macro_f1"]
    assert [e.epoch for e in events if e.phase == "epoch"] == [0, 1] and any(e.phase == "step" for e in events)
    assert len(result.history) == 2


def test_cancel_leaves_no_model_and_a_restart_resumes(base: Path, tmp_path: Path) -> None:
    labelled, unlabelled, validation = _data()
    out = tmp_path / "candidate.pt"
    work = tmp_path / "job"
    polls = {"n": 0}

    def cancel_late() -> bool:
        polls["n"] += 1
        return polls["n"] > 7  # in the second epoch: an epoch is 2*4/2 + 8/4 = 6 steps

    kwargs = dict(out_path=out, labelled=labelled, unlabelled=unlabelled, validation=validation, device="cpu")
    with pytest.raises(TrainingCancelled):
        finetune(base, hyperparameters=HYPER, should_cancel=cancel_late, work_dir=work, **kwargs)
    assert not out.exists() and not list(tmp_path.glob(".candidate.pt*"))  # no model, no temp file
    assert (work / "train_state.pt").is_file()
    result = finetune(base, hyperparameters=HYPER, work_dir=work, **kwargs)
    assert out.is_file() and result.metrics["finetune"]["steps"] == 12  # 6 before + 6 after the restart


def test_finetune_refuses_bad_requests(base: Path, tmp_path: Path) -> None:
    labelled, unlabelled, _ = _data()
    kwargs = dict(out_path=tmp_path / "c.pt", labelled=labelled, unlabelled=unlabelled, device="cpu")
    with pytest.raises(ValueError, match="unknown hyper-parameters"):
        finetune(base, hyperparameters={"learning_rate": 1}, **kwargs)
    with pytest.raises(ValueError, match="reflect_padding"):
        finetune(base, hyperparameters={"reflect_padding": True}, **kwargs)
    with pytest.raises(ValueError, match="needs unlabelled"):
        finetune(base, out_path=tmp_path / "c.pt", labelled=labelled, unlabelled=None, device="cpu", mode="combined")
    assert not (tmp_path / "c.pt").exists()


def test_finetune_can_start_from_a_pretrained_backbone(base: Path, tmp_path: Path) -> None:
    """``pretrained=FILE``: the backbone from the file, a new head, the base's classes and input."""
    torch.manual_seed(7)
    source = build_model("tiny3d", num_classes=5)
    weights = tmp_path / "backbone.pt"
    torch.save(source.state_dict(), weights)
    labelled, unlabelled, validation = _data()
    result = finetune(
        base,
        out_path=tmp_path / "c.pt",
        labelled=labelled,
        unlabelled=unlabelled,
        validation=validation,
        mode="supervised",
        hyperparameters={**HYPER, "epochs": 0},
        device="cpu",
        pretrained=str(weights),
    )
    loaded = load_checkpoint(result.path, device="cpu")
    assert loaded.metrics["finetune"]["pretrained"] == str(weights) and loaded.class_names == NAMES
    assert torch.equal(loaded.model.blocks[0].conv.weight, source.blocks[0].conv.weight)  # backbone copied
    assert loaded.model.fc.out_features == 2
    base_model = load_checkpoint(base, device="cpu").model
    assert not torch.equal(loaded.model.blocks[0].conv.weight, base_model.blocks[0].conv.weight)
