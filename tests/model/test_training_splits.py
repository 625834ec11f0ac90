"""Issue 9.6: clips of one recording never straddle train and test; too few recordings is an error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.training import experiment_data
from model.training.experiment_data import load_splits, split_indices
from model.training.training_data import TrainingData


def _clips(groups: np.ndarray) -> TrainingData:
    """Tiny single-label clips (2 frames of 4x4), two classes alternating, in ``groups``."""
    n = groups.size
    labels = np.eye(2, dtype=np.float32)[np.arange(n) % 2]
    frames = np.zeros((n, 2, 4, 4, 3), dtype=np.uint8)
    return TrainingData(frames=frames, labels=labels, class_names=["none", "fall"], multi_label=False, groups=groups)


def _fake_source(monkeypatch: pytest.MonkeyPatch, name: str, data: TrainingData) -> None:
    def load(*_: Any, **__: Any) -> TrainingData:
        return data

    monkeypatch.setattr(experiment_data, name, load)


@pytest.mark.parametrize("recordings", [1, 2])
def test_too_few_recordings_is_refused(recordings: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = _clips(np.repeat(np.arange(recordings), 20))
    with pytest.raises(ValueError, match=rf"from {recordings} recording\(s\).*at least 3"):
        split_indices(data, 0.3, 0.15, 0)
    _fake_source(monkeypatch, "annotated_videos", data)  # what a CSV of `recordings` videos gives
    with pytest.raises(ValueError, match="at least 3"):
        load_splits("csv:ann.csv,frames=2,width=4,height=4", tmp_path)


def test_three_recordings_are_split_by_recording(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = _clips(np.repeat(np.arange(3), 10))
    _fake_source(monkeypatch, "annotated_videos", data)
    splits = load_splits("csv:ann.csv,frames=2,width=4,height=4", tmp_path)
    assert splits.description["split"] == "by group"
    parts = [set(splits.train.groups), set(splits.val.groups), set(splits.test.groups)]
    assert all(len(p) == 1 for p in parts) and len(set.union(*parts)) == 3


def test_items_that_are_their_own_group_keep_the_stratified_split(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = _clips(np.arange(20))  # e.g. an image folder: one group per image
    tr, va, te, how = split_indices(data, 0.3, 0.15, 0)
    assert how == "stratified by class"
    assert (tr.size, va.size, te.size) == (10, 4, 6)  # per class of 10: 3 test, 2 val (round(1.5)), 5 train
    np.testing.assert_array_equal(np.sort(np.r_[tr, va, te]), np.arange(20))
    assert np.bincount(te % 2).tolist() == [3, 3]
    _fake_source(monkeypatch, "image_folder", data)
    assert load_splits("imagefolder:x", tmp_path).description["split"] == "stratified by class"
