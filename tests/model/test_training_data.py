"""The four data kinds load on tiny data these tests make: image folder, VOC, CSV + video, synthetic,
plus the server's reviewed-clip records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.training.sources import (
    ReviewedClip,
    annotated_videos,
    image_folder,
    labels_from_review,
    reviewed_clips,
    synthetic_ward,
    voc,
)
from model.training.toy_data import write_shapes_dataset
from model.training.training_data import LazyFrames
from model.weights import InputSpec


def test_image_folder(tmp_path: Path) -> None:
    write_shapes_dataset(tmp_path, classes=3, per_class=4, size=20, seed=1)
    (tmp_path / "notes.txt").write_text("not a class")
    Image.new("RGB", (30, 10), (255, 0, 0)).save(tmp_path / "disc" / "odd_size.jpg")
    data = image_folder(tmp_path, size=(20, 20))
    assert data.class_names == ["disc", "square", "triangle"]
    assert data.frames.shape == (13, 1, 20, 20, 3) and data.frames.dtype == np.uint8
    assert not data.multi_label and data.regions is None
    np.testing.assert_array_equal(data.labels.sum(axis=0), [5, 4, 4])
    np.testing.assert_array_equal(data.labels.sum(axis=1), np.ones(13))
    assert data.input_spec().size == (20, 20) and data.input_spec().frames == 1


def _voc_xml(filename: str, objects: list[tuple[str, int, int, int, int]], size: tuple[int, int]) -> str:
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in objects
    )
    return (
        f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>"
    )


def test_voc_with_two_annotations(tmp_path: Path) -> None:
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations").mkdir()
    Image.new("RGB", (40, 20), (10, 20, 30)).save(tmp_path / "JPEGImages" / "a.jpg")
    Image.new("RGB", (20, 20), (200, 20, 30)).save(tmp_path / "JPEGImages" / "b.jpg")
    (tmp_path / "Annotations" / "a.xml").write_text(
        _voc_xml("a.jpg", [("dog", 1, 1, 20, 10), ("person", 21, 11, 40, 20), ("dog", 31, 1, 40, 10)], (40, 20))
    )
    (tmp_path / "Annotations" / "b.xml").write_text(_voc_xml("b.jpg", [("cat", 5, 5, 10, 10)], (20, 20)))
    data = voc(tmp_path, size=(20, 20))
    assert data.class_names == ["cat", "dog", "person"] and data.multi_label
    np.testing.assert_array_equal(data.labels, [[0, 1, 1], [1, 0, 0]])
    assert data.frames.shape == (2, 1, 20, 20, 3)
    # 1-based inclusive VOC corners -> 0-based [x0, x1), scaled by 20/40 horizontally
    np.testing.assert_allclose(data.regions[0], [[1, 0, 0, 10, 10], [2, 10, 10, 20, 20], [1, 15, 0, 20, 10]])
    np.testing.assert_allclose(data.regions[1], [[0, 4, 4, 10, 10]])


def _tiny_video(tmp_path: Path) -> Path:
    from ingest.synthetic import SynthConfig, generate

    result = generate(tmp_path / "v", SynthConfig(seconds=12, seed=3, width=64, height=48, events_per_minute=5))
    return result.video


def test_csv_and_video(tmp_path: Path) -> None:
    video = _tiny_video(tmp_path)
    csv_path = tmp_path / "ann.csv"
    csv_path.write_text(f"path,start,end,label,x0,y0,x1,y1\n{video.relative_to(tmp_path)},2.0,6.0,fall,0,0,32,24\n")
    spec = InputSpec(frames=4, sample_fps=2.0, size=(32, 24), multi_label=True)
    data = annotated_videos(csv_path, spec)
    assert data.class_names == ["fall"] and data.frames.shape[1:] == (4, 24, 32, 3)
    assert len(data) == 6  # 12 s in 2 s clips
    np.testing.assert_array_equal(data.labels[:, 0], [0, 1, 1, 0, 0, 0])  # 2-6 s covers clips 1 and 2
    assert data.regions is not None
    np.testing.assert_allclose(data.regions[1], [[0, 0, 0, 16, 12]])  # scaled 64x48 -> 32x24
    single = annotated_videos(csv_path, InputSpec(frames=4, sample_fps=2.0, size=(32, 24), multi_label=False))
    assert single.class_names == ["none", "fall"]
    np.testing.assert_array_equal(single.labels.argmax(axis=1), [0, 1, 1, 0, 0, 0])
    csv_path.write_text("path,begin,label\nx.mp4,1,fall\n")
    with pytest.raises(ValueError, match="header"):
        annotated_videos(csv_path, spec)


def test_synthetic_ward_clips_have_regions(tmp_path: Path) -> None:
    spec = InputSpec(frames=4, sample_fps=2.0, size=(32, 24), multi_label=False)
    data = synthetic_ward(
        tmp_path, spec, seeds=[5], seconds=16, synth_options={"width": 64, "height": 48, "events_per_minute": 8}
    )
    assert data.class_names == ["none", "bed_exit", "fall", "rhythmic_movement"]
    assert data.frames.shape[1:] == (4, 24, 32, 3)
    events = data.labels[:, 1:].sum(axis=1) > 0
    assert events.any() and (~events).any()
    assert data.regions is not None
    for i in range(len(data)):
        k = int(data.labels[i].argmax())
        if k == 0:
            assert data.regions[i].size == 0
        else:  # every rectangle belongs to the clip's class and lies in the 32x24 input
            r = data.regions[i]
            assert r.size and set(r[:, 0].astype(int)) == {k}
            assert r[:, 1].min() >= 0 and r[:, 3].max() <= 32 and r[:, 4].max() <= 24


def test_reviewed_clips_from_loaders_and_video(tmp_path: Path) -> None:
    video = _tiny_video(tmp_path)
    names = ["bed_exit", "fall"]
    spec = InputSpec(frames=3, sample_fps=1.0, size=(16, 12), multi_label=True)
    loads = {"n": 0}

    def loader() -> np.ndarray:
        loads["n"] += 1
        return np.full((3, 24, 32, 3), 200, dtype=np.uint8)  # resized to 16x12 on load

    clips = [
        ReviewedClip(labels=labels_from_review(names, positives=["fall"]), load=loader, group=1),
        ReviewedClip(labels=labels_from_review(names, negatives=["bed_exit"], others=float("nan")), load=loader),
        ReviewedClip(video=str(video), times=[0.0, 0.5, 1.0], group=2),  # unlabelled
    ]
    data = reviewed_clips(clips, names, spec)
    assert isinstance(data.frames, LazyFrames) and loads["n"] == 0  # nothing decoded yet
    np.testing.assert_array_equal(data.labels[0], [0, 1])
    assert data.labels[1, 0] == 0 and np.isnan(data.labels[1, 1])
    assert np.isnan(data.labels[2]).all()
    np.testing.assert_array_equal(data.labelled_mask(), [True, True, False])
    batch = data.batch(np.array([0, 2]))
    assert batch.shape == (2, 3, 12, 16, 3) and loads["n"] == 1
    assert (batch[0] == 200).all() and batch[1].std() > 0  # real video pixels
    sub = data.subset([2, 0], unlabel=True)
    assert np.isnan(sub.labels).all() and sub.batch(np.array([1])).shape == (1, 3, 12, 16, 3)
    with pytest.raises(ValueError, match="exactly one"):
        ReviewedClip(labels=None)
    with pytest.raises(ValueError, match="unknown class"):
        labels_from_review(names, positives=["walk"])
