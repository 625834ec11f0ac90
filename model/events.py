"""From per-clip scores to events: thresholds with hysteresis, gap merging, minimum duration.

Pure numpy, so the same code runs in the worker, in tests and in offline evaluation.

For each label independently, with clips sorted by start time:

1. *Hysteresis.* A clip whose score is ``>= threshold`` starts (or continues) a positive run;
   while a run is open, clips scoring ``>= low_threshold`` keep it going. Hysteresis is causal
   (it only extends forward, like an online detector would) and is reset by a hole in the clip
   sequence longer than ``merge_gap`` seconds. A low threshold below the high one stops one
   dipping clip from splitting an event in two.
2. *Merging.* Positive runs separated by a gap of at most ``merge_gap`` seconds (from one run's
   end to the next run's start) become one event.
3. *Minimum duration.* Events shorter than ``min_duration`` seconds (end - start) are dropped.

An event spans from its first positive clip's start to its last positive clip's end; its peak is
the positive clip with the highest score (``peak_time`` = that clip's midpoint).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DetectedEvent", "EventRule", "detect_events"]


@dataclass(frozen=True)
class EventRule:
    """Per-label detection rule. Thresholds are probabilities in [0, 1]; times are seconds.

    ``low_threshold`` defaults to ``threshold`` (no hysteresis) and must not exceed it.
    """

    threshold: float = 0.5
    low_threshold: float | None = None
    min_duration: float = 0.0
    merge_gap: float = 2.0

    def __post_init__(self) -> None:
        if self.low_threshold is not None and self.low_threshold > self.threshold:
            raise ValueError(f"low_threshold {self.low_threshold} exceeds threshold {self.threshold}")
        if self.min_duration < 0 or self.merge_gap < 0:
            raise ValueError("min_duration and merge_gap must be >= 0 seconds")

    @property
    def low(self) -> float:
        return self.threshold if self.low_threshold is None else self.low_threshold


@dataclass
class DetectedEvent:
    """One detected event. ``clip_indices`` are positions in the input arrays of the clips that
    were positive for this label (bridged clips under a merged gap are not listed)."""

    label: str
    start: float
    end: float
    peak_score: float
    peak_time: float
    clip_indices: list[int] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.end - self.start


def _rule_for(label: str, rules: EventRule | Mapping[str, EventRule]) -> EventRule:
    if isinstance(rules, EventRule):
        return rules
    # Labels without their own rule use the defaults rather than being silently skipped.
    return rules.get(label, EventRule())


def _positive_mask(starts: np.ndarray, ends: np.ndarray, score: np.ndarray, rule: EventRule) -> np.ndarray:
    """Causal hysteresis over clips sorted by start. NaN scores are never positive."""
    high = score >= rule.threshold
    low = score >= rule.low
    positive = np.zeros(score.shape[0], dtype=bool)
    active = False
    for i in range(score.shape[0]):
        if active and i > 0 and starts[i] - ends[i - 1] > rule.merge_gap:
            active = False  # a hole in the recording ends any open run
        active = bool(high[i] or (active and low[i]))
        positive[i] = active
    return positive


def _runs_to_events(
    label: str,
    order: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    score: np.ndarray,
    positive: np.ndarray,
    rule: EventRule,
) -> list[DetectedEvent]:
    """Group positive clips (sorted positions) into events, merging gaps <= merge_gap."""
    events: list[DetectedEvent] = []
    groups: list[list[int]] = []
    group_end = -np.inf
    for pos in np.flatnonzero(positive):
        if groups and starts[pos] - group_end <= rule.merge_gap:
            groups[-1].append(int(pos))
            group_end = max(group_end, ends[pos])
        else:
            groups.append([int(pos)])
            group_end = ends[pos]
    for members in groups:
        idx = np.asarray(members)
        start = float(starts[idx].min())
        end = float(ends[idx].max())
        if end - start < rule.min_duration:
            continue
        best = idx[int(np.argmax(score[idx]))]
        events.append(
            DetectedEvent(
                label=label,
                start=start,
                end=end,
                peak_score=float(score[best]),
                peak_time=float((starts[best] + ends[best]) / 2.0),
                clip_indices=[int(order[i]) for i in idx],
            )
        )
    return events


def detect_events(
    starts: Sequence[float] | np.ndarray,
    ends: Sequence[float] | np.ndarray,
    scores: np.ndarray,
    class_names: Sequence[str],
    rules: EventRule | Mapping[str, EventRule] = EventRule(),
) -> list[DetectedEvent]:
    """Turn per-clip scores into events for every label.

    ``starts``/``ends``: ``[N]`` clip times in seconds; ``scores``: ``[N, K]`` probabilities with
    columns in ``class_names`` order; ``rules``: one rule for all labels or a mapping
    label -> rule (labels missing from the mapping use ``EventRule()``). Clips need not be
    sorted. Returns events sorted by (start, label).
    """
    starts_a = np.asarray(starts, dtype=np.float64).reshape(-1)
    ends_a = np.asarray(ends, dtype=np.float64).reshape(-1)
    scores_a = np.asarray(scores, dtype=np.float64)
    n = starts_a.shape[0]
    if scores_a.ndim == 1 and len(class_names) == 1:
        scores_a = scores_a[:, None]
    if ends_a.shape[0] != n or scores_a.ndim != 2 or scores_a.shape[0] != n:
        raise ValueError(
            f"starts [{n}], ends [{ends_a.shape[0]}] and scores {scores_a.shape} must describe the same clips"
        )
    if scores_a.shape[1] != len(class_names):
        raise ValueError(f"scores have {scores_a.shape[1]} columns but {len(class_names)} class names were given")
    if n == 0:
        return []
    order = np.argsort(starts_a, kind="stable")
    s_sorted, e_sorted = starts_a[order], ends_a[order]
    events: list[DetectedEvent] = []
    for k, label in enumerate(class_names):
        rule = _rule_for(label, rules)
        score = scores_a[order, k]
        positive = _positive_mask(s_sorted, e_sorted, score, rule)
        events.extend(_runs_to_events(label, order, s_sorted, e_sorted, score, positive, rule))
    events.sort(key=lambda ev: (ev.start, ev.label))
    return events
