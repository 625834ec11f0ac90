"""Turn reviewed events and scored clips into ATCON training data (``model.training.sources.ReviewedClip``).

* labelled: every clip overlapping a reviewed event. Confirmed / relabelled = positive for the (new) label and
  negative for the rest; rejected = negative for that label, unknown (NaN, ignored by the loss) for the rest.
* unlabelled: every other clip of the chosen recordings (a seeded sample, capped): continuous video is the pool.
* validation: the labelled clips of a held-out share of recordings (whole recordings, so no clip leaks).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from model.training.sources import ReviewedClip, labels_from_review
from server.db.tables import Clip, Event, EventStatus, ModelVersion, Recording, RecordingStatus

REVIEWED = (EventStatus.confirmed, EventStatus.relabelled, EventStatus.rejected)


class NotEnoughDataError(ValueError):
    """The database does not hold what the requested mode needs."""


@dataclass
class FinetuneData:
    labelled: list[ReviewedClip] = field(default_factory=list)
    unlabelled: list[ReviewedClip] = field(default_factory=list)
    validation: list[ReviewedClip] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {"labelled": len(self.labelled), "unlabelled": len(self.unlabelled),
                "validation": len(self.validation)}


def _label_vector(event: Event, class_names: Sequence[str]) -> list[float] | None:
    if event.status == EventStatus.rejected:
        if event.label not in class_names:
            return None
        return labels_from_review(class_names, negatives=[event.label], others=math.nan)
    label = event.reviewed_label or event.label
    if label not in class_names:
        return None  # relabelled to a class this model does not have
    return labels_from_review(class_names, positives=[label])


def build_finetune_data(*, session: Session, data_dir: Path, base: ModelVersion, mode: str,
                        recording_ids: Sequence[int] | None = None, max_unlabelled: int = 2000,
                        validation_fraction: float = 0.25, seed: int = 0) -> FinetuneData:
    """Assemble the three clip sets for a fine-tune job from the database."""
    class_names = list(base.class_names)
    recordings = select(Recording).where(Recording.status == RecordingStatus.scored)
    if recording_ids:
        recordings = recordings.where(Recording.id.in_(list(recording_ids)))
    paths = {r.id: str(data_dir / r.path) for r in session.scalars(recordings) if r.path}
    if not paths:
        raise NotEnoughDataError("no scored recordings to train on")

    events = session.scalars(
        select(Event).where(Event.recording_id.in_(list(paths)), Event.status.in_(REVIEWED))
    ).all()
    clips_by_recording: dict[int, list[Clip]] = {}
    indexed: set[tuple[int, int]] = set()
    for clip in session.scalars(select(Clip).where(Clip.recording_id.in_(list(paths))).order_by(Clip.id)):
        if (clip.recording_id, clip.index) not in indexed:  # one per clip, whatever model version scored it
            indexed.add((clip.recording_id, clip.index))
            clips_by_recording.setdefault(clip.recording_id, []).append(clip)

    labelled_by_recording: dict[int, list[ReviewedClip]] = {}
    taken: set[tuple[int, int]] = set()
    for event in events:
        labels = _label_vector(event, class_names)
        if labels is None:
            continue
        for clip in clips_by_recording.get(event.recording_id, []):
            key = (clip.recording_id, clip.index)
            if clip.start < event.end and event.start < clip.end and key not in taken:
                taken.add(key)
                labelled_by_recording.setdefault(clip.recording_id, []).append(
                    ReviewedClip(labels=labels, video=paths[clip.recording_id], times=list(clip.timestamps),
                                 group=clip.recording_id))
    pool = [
        ReviewedClip(video=paths[c.recording_id], times=list(c.timestamps), group=c.recording_id)
        for clips in clips_by_recording.values() for c in clips if (c.recording_id, c.index) not in taken
    ]
    rng = random.Random(seed)
    rng.shuffle(pool)
    data = FinetuneData(unlabelled=pool[:max_unlabelled])

    groups = sorted(labelled_by_recording)
    rng.shuffle(groups)
    held = max(1, round(len(groups) * validation_fraction)) if len(groups) > 1 else 0
    for i, group in enumerate(groups):
        (data.validation if i < held else data.labelled).extend(labelled_by_recording[group])
    if held == 0 and data.labelled:
        # One reviewed recording: hold out every 4th clip so model selection still has something to look at.
        data.validation = data.labelled[::4]
        data.labelled = [c for i, c in enumerate(data.labelled) if i % 4]
    if mode != "unsupervised" and not data.labelled:
        raise NotEnoughDataError("no reviewed events to learn from: confirm or reject some events first")
    if mode != "supervised" and not data.unlabelled:
        raise NotEnoughDataError("no unreviewed clips for the unsupervised (ATCON) part")
    return data
