"""Training data for fine-tuning and experiments: one container, four ways to fill it.

:class:`TrainingData` holds uint8 frames ``[N, T, H, W, 3]`` (in memory, or loaded lazily per
batch through :class:`LazyFrames`), labels ``[N, K]`` and what the evaluation needs (groups for
splits by recording, ground-truth regions for localisation). Images are clips of one frame
(``T = 1``): every network in :mod:`model.nets` that takes images also takes ``[N, 3, 1, H, W]``.

Labels are float32: ``1`` positive, ``0`` negative, ``NaN`` unknown. An unlabelled item is a row
of NaN; a reviewed event rejected by a clinician is ``0`` for its label and may be ``NaN`` for the
others (the supervised loss ignores NaN entries). ``multi_label`` selects the loss and the
prediction rule (sigmoid > 0.5 vs argmax; ATCON.md "Evaluation").

Sources:

(a) :class:`ReviewedClip` + :func:`reviewed_clips`: the server adapts its database rows (reviewed
    events, other clips as the unlabelled pool) to plain records with a frame loader or a video
    path and frame times;
(b) :func:`annotated_videos`: videos plus a CSV ``path,start,end,label`` (optionally
    ``x0,y0,x1,y1`` in video pixels), cut into clips exactly as the worker cuts them;
(c) :func:`image_folder` (``root/<class>/*.png|jpg``, single-label) and :func:`voc` (PASCAL VOC
    ``JPEGImages/`` + ``Annotations/*.xml``, multi-label, boxes);
(d) :func:`synthetic_ward`: clips of synthetic ward video (``ingest.synthetic``) with per-frame
    ground-truth boxes, via :mod:`model.training.synthetic_data`.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.files import atomic_path
from model.weights import InputSpec

__all__ = [
    "IMAGE_SUFFIXES",
    "LazyFrames",
    "ReviewedClip",
    "TrainingData",
    "annotated_videos",
    "image_folder",
    "labels_from_review",
    "load_npz",
    "reviewed_clips",
    "save_npz",
    "synthetic_ward",
    "voc",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
BACKGROUND = "none"


class LazyFrames:
    """Frames loaded on demand: ``lazy[idx]`` calls the loaders of ``idx`` and stacks the results.

    Each loader returns uint8 ``[T, H, W, 3]``; all must share one shape (``shape`` below). Lets a
    large unlabelled pool (thousands of clips of continuous video) be trained on without holding
    it in memory: only a batch is decoded at a time.
    """

    def __init__(self, loaders: Sequence[Callable[[], np.ndarray]], frame_shape: tuple[int, int, int, int]) -> None:
        self._loaders = list(loaders)
        self.frame_shape = tuple(int(s) for s in frame_shape)

    def __len__(self) -> int:
        return len(self._loaders)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self._loaders), *self.frame_shape)

    @property
    def ndim(self) -> int:
        return 5

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def __getitem__(self, idx: int | Sequence[int] | np.ndarray) -> np.ndarray:
        if isinstance(idx, int | np.integer):
            return self._load(int(idx))
        return np.stack([self._load(int(i)) for i in np.asarray(idx).reshape(-1)]) if len(idx) else self._empty()

    def _empty(self) -> np.ndarray:
        return np.zeros((0, *self.frame_shape), dtype=np.uint8)

    def _load(self, i: int) -> np.ndarray:
        frames = np.asarray(self._loaders[i]())
        if frames.dtype != np.uint8 or tuple(frames.shape) != self.frame_shape:
            raise ValueError(
                f"clip {i}: loader returned {frames.dtype} {frames.shape}, expected uint8 {self.frame_shape}"
            )
        return frames

    def subset(self, indices: np.ndarray) -> LazyFrames:
        return LazyFrames([self._loaders[int(i)] for i in indices], self.frame_shape)  # type: ignore[arg-type]


FrameStore = np.ndarray | LazyFrames


@dataclass
class TrainingData:
    """Items for training and evaluation.

    Attributes:
        frames: uint8 ``[N, T, H, W, 3]`` RGB (ndarray or :class:`LazyFrames`); images have T = 1.
        labels: float32 ``[N, K]``: 1 positive, 0 negative, NaN unknown (unlabelled = all NaN).
        class_names: K names, label columns in this order.
        multi_label: sigmoid per class (True) or one class per item, softmax (False).
        groups: int64 ``[N]`` recording / video / source id, for splits that keep a recording in
            one split.
        regions: per item float32 ``[M, 5]`` rows ``(class, x0, y0, x1, y1)`` in input pixels
            (x1/y1 exclusive); ``None`` when the source has no ground-truth regions. The
            ground-truth region of a class is the union of its rectangles.
        source: short description for logs and results.
    """

    frames: FrameStore
    labels: np.ndarray
    class_names: list[str]
    multi_label: bool
    groups: np.ndarray
    regions: list[np.ndarray] | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, k = len(self.frames), len(self.class_names)
        self.labels = np.asarray(self.labels, dtype=np.float32).reshape(n, k)
        self.groups = np.asarray(self.groups, dtype=np.int64).reshape(n)
        if self.frames.ndim != 5 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [N,T,H,W,3], got {self.frames.dtype} {tuple(self.frames.shape)}")
        if self.regions is not None and len(self.regions) != n:
            raise ValueError(f"regions must have one entry per item ({n}), got {len(self.regions)}")
        if not self.multi_label:
            known = ~np.isnan(self.labels).any(axis=1)
            if known.any() and not np.all(self.labels[known].sum(axis=1) == 1):
                raise ValueError("single-label data needs exactly one positive per labelled item")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def frame_shape(self) -> tuple[int, int, int, int]:
        """``(T, H, W, 3)`` of one item."""
        return tuple(int(s) for s in self.frames.shape[1:])  # type: ignore[return-value]

    @property
    def input_size(self) -> tuple[int, int]:
        """``(width, height)`` of the frames."""
        t, h, w, _ = self.frame_shape
        return (w, h)

    def labelled_mask(self) -> np.ndarray:
        """bool ``[N]``: items with at least one known label entry."""
        return ~np.isnan(self.labels).all(axis=1)

    def positives(self) -> np.ndarray:
        """Positive items per class, int64 ``[K]`` (NaN counts as not positive)."""
        return (np.nan_to_num(self.labels, nan=0.0) > 0.5).sum(axis=0).astype(np.int64)

    def class_indices(self) -> np.ndarray:
        """int64 ``[N]`` argmax class of each item (single-label data; -1 where unlabelled)."""
        out = np.nan_to_num(self.labels, nan=-1.0).argmax(axis=1)
        out[~self.labelled_mask()] = -1
        return out

    def batch(self, idx: np.ndarray) -> np.ndarray:
        """uint8 frames ``[B, T, H, W, 3]`` of the items ``idx``."""
        return np.asarray(self.frames[np.asarray(idx, dtype=np.int64)])

    def subset(self, indices: Sequence[int] | np.ndarray, *, unlabel: bool = False) -> TrainingData:
        """The items at ``indices``; ``unlabel=True`` replaces their labels by NaN (the pool)."""
        idx = np.asarray(indices, dtype=np.int64)
        frames = self.frames.subset(idx) if isinstance(self.frames, LazyFrames) else self.frames[idx]
        labels = np.full((idx.size, self.num_classes), np.nan, np.float32) if unlabel else self.labels[idx]
        return TrainingData(
            frames=frames,
            labels=labels,
            class_names=list(self.class_names),
            multi_label=self.multi_label,
            groups=self.groups[idx],
            regions=None if self.regions is None else [self.regions[int(i)] for i in idx],
            source=self.source,
            extra=dict(self.extra),
        )

    def input_spec(self, *, frames_per_second: float = 1.0, **kwargs: Any) -> InputSpec:
        """An :class:`InputSpec` matching the frames (size, frame count, label rule)."""
        t = self.frame_shape[0]
        base = dict(frames=t, sample_fps=frames_per_second, size=self.input_size, multi_label=self.multi_label)
        base.update(kwargs)
        return InputSpec(**base)


# --------------------------------------------------------------------------------------------
# (a) reviewed clips from the server
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewedClip:
    """One clip as the server sees it, adapted from a database row.

    Either ``load`` (a callable returning uint8 ``[T, H, W, 3]`` at the model's input size, or any
    size: frames are resized) or ``video`` + ``times`` (frame timestamps in seconds, read with
    :func:`ingest.decode.read_frames`). ``labels``: per class of the dataset's ``class_names``,
    1 / 0 / NaN (see :func:`labels_from_review`); ``None`` = unlabelled (the unsupervised pool).
    ``group``: recording id (splits keep a recording together). ``regions``: optional
    ``(class, x0, y0, x1, y1)`` rows in input pixels.
    """

    labels: Sequence[float] | None = None
    load: Callable[[], np.ndarray] | None = None
    video: str | None = None
    times: Sequence[float] | None = None
    group: int = 0
    regions: Sequence[tuple[float, float, float, float, float]] = ()

    def __post_init__(self) -> None:
        if (self.load is None) == (self.video is None):
            raise ValueError("a ReviewedClip needs exactly one of load or video (+ times)")
        if self.video is not None and not self.times:
            raise ValueError("a ReviewedClip with a video path needs the frame times")


def labels_from_review(
    class_names: Sequence[str],
    *,
    positives: Sequence[str] = (),
    negatives: Sequence[str] = (),
    others: float = 0.0,
) -> list[float]:
    """Label vector of a reviewed event.

    Confirmed / relabelled events are ``positives=[label]``; rejected ones ``negatives=[label]``.
    ``others`` is the value for every other class: ``0.0`` (default: events rarely co-occur, so a
    reviewed clip is taken as negative for the rest) or ``nan`` (unknown, ignored by the loss).
    """
    index = {name: k for k, name in enumerate(class_names)}
    out = [float(others)] * len(class_names)
    for name in list(positives) + list(negatives):
        if name not in index:
            raise ValueError(f"unknown class {name!r}; classes are {list(class_names)}")
    for name in negatives:
        out[index[name]] = 0.0
    for name in positives:
        out[index[name]] = 1.0
    return out


def _resized(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` resized to ``size`` = (w, h) (bilinear, antialiased)."""
    w, h = size
    if frames.shape[1:3] == (h, w):
        return frames
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in frames])


def _clip_loader(clip: ReviewedClip, spec: InputSpec) -> Callable[[], np.ndarray]:
    size = tuple(spec.size)

    def load() -> np.ndarray:
        if clip.load is not None:
            frames = np.asarray(clip.load())
        else:
            from ingest.decode import read_frames

            assert clip.video is not None and clip.times is not None
            frames = read_frames(clip.video, list(clip.times), size=size)  # type: ignore[arg-type]
        if frames.ndim == 3:  # a single image
            frames = frames[None]
        return _resized(frames.astype(np.uint8, copy=False), size)  # type: ignore[arg-type]

    return load


def reviewed_clips(
    clips: Sequence[ReviewedClip],
    class_names: Sequence[str],
    spec: InputSpec,
    *,
    lazy: bool = True,
    source: str = "reviewed",
) -> TrainingData:
    """Turn server records into :class:`TrainingData` (frames loaded per batch when ``lazy``).

    Every clip must yield ``spec.frames`` frames; they are resized to ``spec.size``. With
    ``spec.multi_label`` False, a labelled clip needs exactly one positive.
    """
    k = len(class_names)
    w, h = spec.size
    loaders = [_clip_loader(c, spec) for c in clips]
    frames: FrameStore = LazyFrames(loaders, (spec.frames, h, w, 3))
    if not lazy:
        frames = frames[np.arange(len(clips))] if clips else np.zeros((0, spec.frames, h, w, 3), np.uint8)
    labels = np.full((len(clips), k), np.nan, dtype=np.float32)
    for i, c in enumerate(clips):
        if c.labels is not None:
            if len(c.labels) != k:
                raise ValueError(f"clip {i}: {len(c.labels)} labels for {k} classes")
            labels[i] = np.asarray(c.labels, dtype=np.float32)
    regions = [np.asarray(c.regions, dtype=np.float32).reshape(-1, 5) for c in clips]
    return TrainingData(
        frames=frames,
        labels=labels,
        class_names=list(class_names),
        multi_label=spec.multi_label,
        groups=np.asarray([c.group for c in clips], dtype=np.int64),
        regions=regions if any(r.size for r in regions) else None,
        source=source,
    )


# --------------------------------------------------------------------------------------------
# (b) videos + annotation CSV
# --------------------------------------------------------------------------------------------


@dataclass
class _Interval:
    label: str
    start: float
    end: float
    box: tuple[float, float, float, float] | None = None


def _read_annotation_csv(csv_path: Path) -> dict[Path, list[_Interval]]:
    rows: dict[Path, list[_Interval]] = {}
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        needed = {"path", "start", "end", "label"}
        if reader.fieldnames is None or not needed <= set(reader.fieldnames):
            raise ValueError(f"{csv_path}: the header must contain {sorted(needed)}, got {reader.fieldnames}")
        has_box = {"x0", "y0", "x1", "y1"} <= set(reader.fieldnames)
        for line, row in enumerate(reader, start=2):
            try:
                start, end = float(row["start"]), float(row["end"])
                box = (
                    tuple(float(row[c]) for c in ("x0", "y0", "x1", "y1"))
                    if has_box and all((row.get(c) or "").strip() for c in ("x0", "y0", "x1", "y1"))
                    else None
                )
            except (TypeError, ValueError) as err:
                raise ValueError(f"{csv_path}:{line}: bad number ({err})") from err
            if end <= start:
                raise ValueError(f"{csv_path}:{line}: end {end} is not after start {start}")
            path = Path(row["path"])
            if not path.is_absolute():
                path = csv_path.parent / path
            rows.setdefault(path, []).append(_Interval(row["label"].strip(), start, end, box))  # type: ignore[arg-type]
    return rows


def annotated_videos(
    csv_path: str | os.PathLike[str],
    spec: InputSpec,
    *,
    stride_seconds: float | None = None,
    class_names: Sequence[str] | None = None,
) -> TrainingData:
    """Clips of the videos named in a CSV ``path,start,end,label[,x0,y0,x1,y1]``, all labelled.

    Paths are relative to the CSV's folder. Every listed video is cut with ``ingest.clips``
    (``spec``'s frames, rate and size; stride = clip length unless ``stride_seconds``); a clip
    is positive for a label when an annotated interval covers half of the clip or half of the
    interval (:func:`model.training.synthetic_data.clip_labels`), negative otherwise. With
    ``spec.multi_label`` False a clip takes the label of its largest overlap or, with none, the
    background class ``"none"`` (added first). Optional boxes (video pixels) become regions.
    """
    from ingest.clips import IngestReport, iter_clips
    from ingest.probe import probe
    from model.training.synthetic_data import clip_labels, clip_spec_for

    path = Path(csv_path)
    videos = _read_annotation_csv(path)
    names = (
        list(class_names) if class_names is not None else sorted({iv.label for ivs in videos.values() for iv in ivs})
    )
    if not spec.multi_label and BACKGROUND not in names:
        names = [BACKGROUND, *names]
    frames, labels, groups, regions = [], [], [], []
    for group, (video, intervals) in enumerate(sorted(videos.items())):
        info = probe(video)
        sx, sy = spec.size[0] / info.width, spec.size[1] / info.height
        report = IngestReport()
        for clip in iter_clips(video, clip_spec_for(spec, stride_seconds=stride_seconds), report=report):
            y = clip_labels(clip.start, clip.end, intervals, names)
            if not spec.multi_label:
                y = _single_label(y, clip.start, clip.end, intervals, names)
            rows = [
                (names.index(iv.label), iv.box[0] * sx, iv.box[1] * sy, iv.box[2] * sx, iv.box[3] * sy)
                for iv in intervals
                if iv.box is not None and iv.label in names and y[names.index(iv.label)] > 0.5
            ]
            frames.append(clip.frames)
            labels.append(y)
            groups.append(group)
            regions.append(np.asarray(rows, dtype=np.float32).reshape(-1, 5))
        for message in report.errors:
            logger.warning("%s: %s", video, message)
    if not frames:
        raise ValueError(f"{path}: no clips could be cut from the listed videos")
    has_regions = any(r.size for r in regions)
    return TrainingData(
        frames=np.stack(frames),
        labels=np.stack(labels),
        class_names=names,
        multi_label=spec.multi_label,
        groups=np.asarray(groups),
        regions=regions if has_regions else None,
        source=f"csv:{path}",
    )


def _single_label(
    y: np.ndarray, start: float, end: float, intervals: Sequence[_Interval], names: Sequence[str]
) -> np.ndarray:
    """One-hot of the label with the largest overlap among the positive ones, else background."""
    out = np.zeros(len(names), dtype=np.float32)
    best, best_overlap = 0, 0.0
    for iv in intervals:
        if iv.label not in names:
            continue
        k = names.index(iv.label)
        overlap = max(0.0, min(end, iv.end) - max(start, iv.start))
        if y[k] > 0.5 and overlap > best_overlap:
            best, best_overlap = k, overlap
    out[best if best_overlap > 0 else names.index(BACKGROUND)] = 1.0
    return out


# --------------------------------------------------------------------------------------------
# (c) image folder and PASCAL VOC
# --------------------------------------------------------------------------------------------


def _load_image(path: Path, size: tuple[int, int] | None) -> tuple[np.ndarray, tuple[int, int]]:
    """uint8 ``[H, W, 3]`` RGB resized to ``size`` (w, h) and the original (w, h)."""
    from PIL import Image

    with Image.open(path) as img:
        rgb = img.convert("RGB")
        original = rgb.size
        if size is not None and rgb.size != tuple(size):
            rgb = rgb.resize(tuple(size), Image.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8), original


def image_folder(root: str | os.PathLike[str], *, size: tuple[int, int] | None = None) -> TrainingData:
    """Single-label images ``root/<class>/*.png|jpg`` (classes = sorted folder names).

    ``size`` (w, h) resizes every image; ``None`` keeps the first image's size (all must match).
    Each image is its own group. No regions.
    """
    base = Path(root)
    classes = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{base}: no class folders (expected root/<class>/*.png|jpg)")
    files = [
        (k, f)
        for k, c in enumerate(classes)
        for f in sorted((base / c).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
    ]
    if not files:
        raise ValueError(f"{base}: no images found")
    images: list[np.ndarray] = []
    for _, f in files:
        img, _ = _load_image(f, size)
        if size is None:
            size = (img.shape[1], img.shape[0])
        images.append(img)
    labels = np.zeros((len(files), len(classes)), dtype=np.float32)
    labels[np.arange(len(files)), [k for k, _ in files]] = 1.0
    logger.info("image folder %s: %d images, %d classes, size %s", base, len(files), len(classes), size)
    return TrainingData(
        frames=np.stack(images)[:, None],
        labels=labels,
        class_names=classes,
        multi_label=False,
        groups=np.arange(len(files)),
        source=f"imagefolder:{base}",
    )


def _voc_objects(xml_path: Path) -> tuple[str, tuple[int, int] | None, list[tuple[str, float, float, float, float]]]:
    """(image file name, (w, h) or None, [(class, xmin, ymin, xmax, ymax)]) of one VOC XML."""
    root = ET.parse(xml_path).getroot()
    filename = (root.findtext("filename") or f"{xml_path.stem}.jpg").strip()
    size_el = root.find("size")
    size = None
    if size_el is not None and size_el.findtext("width") and size_el.findtext("height"):
        size = (int(float(size_el.findtext("width") or 0)), int(float(size_el.findtext("height") or 0)))
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if not name or box is None:
            continue
        coords = [float(box.findtext(tag) or "nan") for tag in ("xmin", "ymin", "xmax", "ymax")]
        if any(math.isnan(c) for c in coords):
            raise ValueError(f"{xml_path}: object {name!r} has an incomplete bndbox")
        objects.append((name, *coords))
    return filename, size, objects  # type: ignore[return-value]


def voc(
    root: str | os.PathLike[str],
    *,
    size: tuple[int, int] = (224, 224),
    class_names: Sequence[str] | None = None,
    image_set: str | None = None,
) -> TrainingData:
    """Multi-label images in the PASCAL VOC layout: ``JPEGImages/``, ``Annotations/*.xml``.

    Labels: every class with at least one object (difficult ones included). Regions: each
    object's box scaled to ``size`` (VOC boxes are 1-based inclusive pixel corners; converted to
    0-based ``[x0, x1)``). ``image_set``: restrict to the ids in
    ``ImageSets/Main/<image_set>.txt``. ``class_names`` default to the sorted names found.
    """
    base = Path(root)
    ann_dir, img_dir = base / "Annotations", base / "JPEGImages"
    if not ann_dir.is_dir() or not img_dir.is_dir():
        raise ValueError(f"{base}: expected JPEGImages/ and Annotations/ (PASCAL VOC layout)")
    xmls = sorted(ann_dir.glob("*.xml"))
    if image_set is not None:
        ids = set((base / "ImageSets" / "Main" / f"{image_set}.txt").read_text().split())
        xmls = [x for x in xmls if x.stem in ids]
    parsed = [(x, *_voc_objects(x)) for x in xmls]
    names = list(class_names) if class_names is not None else sorted({o[0] for _, _, _, objs in parsed for o in objs})
    if not names:
        raise ValueError(f"{base}: no annotated objects")
    index = {n: k for k, n in enumerate(names)}
    images, labels, regions = [], [], []
    for xml_path, filename, _, objects in parsed:
        img_path = img_dir / filename
        if not img_path.is_file():
            img_path = img_dir / f"{xml_path.stem}.jpg"
        img, (ow, oh) = _load_image(img_path, size)
        sx, sy = size[0] / ow, size[1] / oh
        y = np.zeros(len(names), dtype=np.float32)
        rows = []
        for name, x0, y0, x1, y1 in objects:
            if name not in index:
                continue
            y[index[name]] = 1.0
            rows.append((index[name], (x0 - 1) * sx, (y0 - 1) * sy, x1 * sx, y1 * sy))
        images.append(img)
        labels.append(y)
        regions.append(np.asarray(rows, dtype=np.float32).reshape(-1, 5))
    logger.info("VOC %s: %d images, %d classes", base, len(images), len(names))
    return TrainingData(
        frames=np.stack(images)[:, None],
        labels=np.stack(labels),
        class_names=names,
        multi_label=True,
        groups=np.arange(len(images)),
        regions=regions,
        source=f"voc:{base}",
    )


# --------------------------------------------------------------------------------------------
# (d) synthetic ward video
# --------------------------------------------------------------------------------------------


def synthetic_ward(
    work_dir: str | os.PathLike[str],
    spec: InputSpec,
    *,
    seeds: Sequence[int],
    seconds: float = 60.0,
    stride_seconds: float | None = None,
    synth_options: Mapping[str, Any] | None = None,
    background: bool = True,
    targets: str = "events",
) -> TrainingData:
    """Clips of synthetic ward videos (one per seed; group = seed) with ground-truth regions.

    ``targets="activity"`` labels the clips instead with the *non-event* activity of the scene
    (multi-label: the distractor kinds and caregiver visits, no regions), a different task on
    the same domain, used to pretrain a backbone that never saw an event label (the stand-in for
    the paper's Kinetics / ImageNet pretraining, which we cannot download).

    Labels from the generator's events (:func:`model.training.synthetic_data.clip_labels`).
    ``spec.multi_label`` False gives one class per clip: the event, or ``"none"`` (the first
    class, when ``background``) for quiet clips, like the paper's softmax video model. Regions:
    every per-frame box of a labelled event whose time falls inside the clip (the union of
    these rectangles is the event's region in the clip), in input pixels.
    """
    from model.training.synthetic_data import DEFAULT_CLASS_NAMES, make_synthetic_dataset

    events = list(DEFAULT_CLASS_NAMES)
    ds, results = make_synthetic_dataset(
        work_dir,
        spec,
        seeds=seeds,
        seconds=seconds,
        class_names=events,
        stride_seconds=stride_seconds,
        synth_options=synth_options,
    )
    by_seed = {int(r.config.seed): r for r in results}
    if targets == "activity":
        return _activity_data(ds, by_seed)
    if targets != "events":
        raise ValueError(f"targets must be 'events' or 'activity', got {targets!r}")
    regions = []
    for i in range(len(ds)):
        result = by_seed[int(ds.video_ids[i])]
        sx, sy = spec.size[0] / result.config.width, spec.size[1] / result.config.height
        start, end = float(ds.starts[i]), float(ds.ends[i])
        rows = []
        for ev in result.events:
            k = events.index(ev.label) if ev.label in events else -1
            if k < 0 or ds.labels[i, k] < 0.5:
                continue
            inside = [b for b in ev.boxes if start <= b[1] < end] or list(ev.boxes)
            rows.extend((k, b[2] * sx, b[3] * sy, b[4] * sx, b[5] * sy) for b in inside)
        regions.append(np.asarray(rows, dtype=np.float32).reshape(-1, 5))
    labels = ds.labels.astype(np.float32)
    names = events
    if not spec.multi_label:
        if not background:
            raise ValueError("single-label synthetic data needs the background class")
        names = [BACKGROUND, *events]
        single = np.zeros((len(ds), len(names)), dtype=np.float32)
        quiet = labels.sum(axis=1) < 0.5
        single[quiet, 0] = 1.0
        single[~quiet, 1 + labels[~quiet].argmax(axis=1)] = 1.0
        labels = single
        regions = [np.concatenate([r[:, :1] + 1, r[:, 1:]], axis=1) if r.size else r for r in regions]
    return TrainingData(
        frames=ds.frames,
        labels=labels,
        class_names=names,
        multi_label=spec.multi_label,
        groups=ds.video_ids,
        regions=regions,
        source="synthetic",
        extra={"starts": ds.starts, "ends": ds.ends},
    )


ACTIVITY_LABELS: tuple[str, ...] = ("lighting_change", "sensor_noise", "passer_by", "caregiver_visit")


def _activity_data(ds: Any, by_seed: Mapping[int, Any]) -> TrainingData:
    """Multi-label clips over :data:`ACTIVITY_LABELS` (distractors and visits), no regions."""
    from model.training.synthetic_data import clip_labels

    names = list(ACTIVITY_LABELS)
    labels = (
        np.stack(
            [
                clip_labels(
                    float(ds.starts[i]),
                    float(ds.ends[i]),
                    list(by_seed[int(ds.video_ids[i])].distractors) + list(by_seed[int(ds.video_ids[i])].background),
                    names,
                )
                for i in range(len(ds))
            ]
        )
        if len(ds)
        else np.zeros((0, len(names)), dtype=np.float32)
    )
    return TrainingData(
        frames=ds.frames,
        labels=labels,
        class_names=names,
        multi_label=True,
        groups=ds.video_ids,
        source="synthetic activity",
    )


def save_npz(data: TrainingData, path: str | os.PathLike[str]) -> Path:
    """Write in-memory :class:`TrainingData` to one ``.npz`` atomically (temp file + rename).

    Used to cache generated datasets: concurrent runs may write the same cache, never a torn one.
    """
    if isinstance(data.frames, LazyFrames):
        raise ValueError("only in-memory frames can be saved")
    target = Path(path)
    regions = data.regions if data.regions is not None else []
    offsets = np.cumsum([0] + [len(r) for r in regions]).astype(np.int64)
    flat = np.concatenate(regions).astype(np.float32) if regions else np.zeros((0, 5), np.float32)
    with atomic_path(target, suffix=".npz") as tmp:
        np.savez(
            tmp,
            frames=data.frames,
            labels=data.labels,
            groups=data.groups,
            class_names=np.asarray(data.class_names),
            multi_label=np.asarray(data.multi_label),
            has_regions=np.asarray(data.regions is not None),
            region_offsets=offsets,
            regions=flat.reshape(-1, 5),
            source=np.asarray(data.source),
        )
    return target


def load_npz(path: str | os.PathLike[str]) -> TrainingData:
    """Inverse of :func:`save_npz` (no pickled objects: ``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as z:
        offsets = z["region_offsets"]
        flat = z["regions"]
        regions = (
            [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)] if bool(z["has_regions"]) else None
        )
        return TrainingData(
            frames=z["frames"],
            labels=z["labels"],
            class_names=[str(c) for c in z["class_names"]],
            multi_label=bool(z["multi_label"]),
            groups=z["groups"],
            regions=regions,
            source=str(z["source"]),
        )
