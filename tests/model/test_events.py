"""Event detection from hand-made score sequences (2 s clips unless stated)."""

from __future__ import annotations

import numpy as np
import pytest

from model.events import EventRule, detect_events

NAMES = ["bed_exit", "fall"]


def _clips(n: int, length: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    starts = np.arange(n) * length
    return starts, starts + length


def _scores(col0: list[float], col1: list[float] | None = None) -> np.ndarray:
    col1 = col1 if col1 is not None else [0.0] * len(col0)
    return np.stack([col0, col1], axis=1)


def test_single_run_span_peak_and_clip_indices() -> None:
    starts, ends = _clips(6)
    scores = _scores([0.1, 0.6, 0.9, 0.7, 0.2, 0.1])
    events = detect_events(starts, ends, scores, NAMES)
    assert len(events) == 1
    ev = events[0]
    assert (ev.label, ev.start, ev.end) == ("bed_exit", 2.0, 8.0)
    assert ev.peak_score == pytest.approx(0.9)
    assert ev.peak_time == pytest.approx(5.0)  # midpoint of clip 2 (4-6 s)
    assert ev.clip_indices == [1, 2, 3]


def test_merge_gap_merges_short_gaps_only() -> None:
    starts, ends = _clips(9)
    # runs at clips 0-1, 3 (gap 2 s) and 7-8 (gap 6 s)
    scores = _scores([0.9, 0.9, 0.1, 0.8, 0.1, 0.1, 0.1, 0.7, 0.7])
    events = detect_events(starts, ends, scores, NAMES, EventRule(merge_gap=2.0))
    assert [(e.start, e.end) for e in events] == [(0.0, 8.0), (14.0, 18.0)]
    assert events[0].clip_indices == [0, 1, 3]
    no_merge = detect_events(starts, ends, scores, NAMES, EventRule(merge_gap=0.0))
    assert len(no_merge) == 3


def test_min_duration_drops_short_events() -> None:
    starts, ends = _clips(8)
    scores = _scores([0.9, 0.0, 0.0, 0.0, 0.9, 0.9, 0.0, 0.0])
    events = detect_events(starts, ends, scores, NAMES, EventRule(min_duration=3.0, merge_gap=0.0))
    assert [(e.start, e.end) for e in events] == [(8.0, 12.0)]


def test_hysteresis_keeps_an_event_through_a_dip_but_needs_high_to_start() -> None:
    starts, ends = _clips(7)
    # 0.45 alone never starts an event; after a 0.8 it continues one.
    scores = _scores([0.45, 0.0, 0.8, 0.45, 0.45, 0.8, 0.1])
    plain = detect_events(starts, ends, scores, NAMES, EventRule(threshold=0.5, merge_gap=0.0))
    assert [(e.start, e.end) for e in plain] == [(4.0, 6.0), (10.0, 12.0)]
    hyst = detect_events(starts, ends, scores, NAMES, EventRule(threshold=0.5, low_threshold=0.4, merge_gap=0.0))
    assert [(e.start, e.end) for e in hyst] == [(4.0, 12.0)]
    assert hyst[0].clip_indices == [2, 3, 4, 5]


def test_per_label_rules_unsorted_input_and_sorting() -> None:
    starts, ends = _clips(4)
    scores = _scores([0.6, 0.6, 0.0, 0.0], [0.0, 0.0, 0.6, 0.0])
    perm = np.array([3, 1, 0, 2])
    rules = {"bed_exit": EventRule(threshold=0.7), "fall": EventRule(threshold=0.5)}
    events = detect_events(starts[perm], ends[perm], scores[perm], NAMES, rules)
    assert [(e.label, e.start) for e in events] == [("fall", 4.0)]
    assert events[0].clip_indices == [3]  # position of clip 2 in the permuted input
    both = detect_events(starts[perm], ends[perm], scores[perm], NAMES)
    assert [e.label for e in both] == ["bed_exit", "fall"]


def test_a_hole_in_the_recording_splits_events_and_resets_hysteresis() -> None:
    starts = np.array([0.0, 2.0, 30.0, 32.0])
    ends = starts + 2.0
    scores = _scores([0.9, 0.9, 0.45, 0.9])
    events = detect_events(starts, ends, scores, NAMES, EventRule(low_threshold=0.4, merge_gap=2.0))
    assert [(e.start, e.end) for e in events] == [(0.0, 4.0), (32.0, 34.0)]


def test_input_validation_and_empty() -> None:
    assert detect_events([], [], np.zeros((0, 2)), NAMES) == []
    with pytest.raises(ValueError):
        detect_events([0.0], [2.0], np.zeros((1, 3)), NAMES)
    with pytest.raises(ValueError):
        detect_events([0.0, 2.0], [2.0], np.zeros((2, 2)), NAMES)
    with pytest.raises(ValueError):
        EventRule(threshold=0.5, low_threshold=0.6)
