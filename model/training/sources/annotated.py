"""Videos plus an annotation CSV ``path,start,end,label`` (optionally ``x0,y0,x1,y1``).

:func:`annotated_videos` cuts the listed videos into clips exactly as the worker cuts them and
labels each clip from the annotated intervals; optional boxes (video pixels) become regions.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.training.training_data import BACKGROUND, TrainingData
from model.weights import InputSpec

__all__ = ["annotated_videos"]

logger = logging.getLogger(__name__)


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
