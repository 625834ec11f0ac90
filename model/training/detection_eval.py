"""Event-level evaluation: how many true events were found, how many detections were false.

Clip-level F1 says little about what a clinician sees: a review queue of events. Here a
ground-truth event counts as *found* when at least one detected event of the same label
overlaps it in time, and a detection is a *false alarm* when it overlaps no ground-truth
event of its label.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from model.events import DetectedEvent, EventRule, detect_events

__all__ = ["DetectionReport", "evaluate_on_synthetic_video", "match_events"]


class _Interval(Protocol):
    label: str
    start: float
    end: float


@dataclass
class DetectionReport:
    """Counts over all labels plus a per-label breakdown ``{label: {"events", "found", "false"}}``."""

    events: int = 0
    found: int = 0
    detections: int = 0
    false_positives: int = 0
    per_label: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def recall(self) -> float:
        """Found / events (1.0 when there is nothing to find)."""
        return self.found / self.events if self.events else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "found": self.found,
            "recall": self.recall,
            "detections": self.detections,
            "false_positives": self.false_positives,
            "per_label": self.per_label,
        }


def _overlaps(a: _Interval, b: _Interval, tolerance: float) -> bool:
    return min(a.end, b.end) - max(a.start, b.start) > -tolerance


def match_events(
    detected: Sequence[DetectedEvent],
    truth: Sequence[_Interval],
    *,
    labels: Sequence[str] | None = None,
    tolerance: float = 0.0,
) -> DetectionReport:
    """Match detections to ground-truth events (same label, time overlap > ``-tolerance`` s).

    ``labels`` restricts the evaluation (default: every label seen in either list), e.g. to
    leave out distractor kinds.
    """
    names = list(labels) if labels is not None else sorted({e.label for e in truth} | {d.label for d in detected})
    report = DetectionReport()
    for name in names:
        gt = [e for e in truth if e.label == name]
        det = [d for d in detected if d.label == name]
        found = sum(1 for e in gt if any(_overlaps(e, d, tolerance) for d in det))
        false = sum(1 for d in det if not any(_overlaps(e, d, tolerance) for e in gt))
        report.per_label[name] = {"events": len(gt), "found": found, "detections": len(det), "false": false}
        report.events += len(gt)
        report.found += found
        report.detections += len(det)
        report.false_positives += false
    return report


def evaluate_on_synthetic_video(
    loaded: Any,
    work_dir: str | os.PathLike[str],
    *,
    seed: int = 1000,
    seconds: float = 120.0,
    rules: EventRule | Mapping[str, EventRule] = EventRule(),
    batch_size: int = 16,
    synth_options: Mapping[str, Any] | None = None,
) -> tuple[DetectionReport, list[DetectedEvent], Any]:
    """Score a freshly generated synthetic video end to end and match events to its ground truth.

    The path the worker takes: ``ingest.synthetic.generate`` -> ``ingest.clips.iter_clips`` (non-
    overlapping clips cut to ``loaded.input_spec``) -> :class:`~model.inference.ClipScorer` ->
    :func:`~model.events.detect_events`. ``loaded`` is a :class:`~model.weights.LoadedModel`.
    Returns the report, the detected events and the generator's ``SynthResult``.
    """
    from ingest.clips import iter_clips
    from ingest.synthetic import SynthConfig, generate
    from model.inference import ClipScorer
    from model.training.synthetic_data import clip_spec_for

    result = generate(
        Path(work_dir) / f"eval_seed_{seed}", SynthConfig(seconds=seconds, seed=seed, **dict(synth_options or {}))
    )
    scored = ClipScorer(loaded, batch_size=batch_size).score_all(
        iter_clips(result.video, clip_spec_for(loaded.input_spec))
    )
    detected = detect_events(scored.starts, scored.ends, scored.scores, loaded.class_names, rules)
    report = match_events(detected, result.events, labels=loaded.class_names)
    return report, detected, result
