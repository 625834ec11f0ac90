"""Deterministic synthetic patient-room video with labelled events and per-frame ground-truth boxes.

Why: no test, demo or benchmark may depend on hospital recordings. This generator stands in for them
(see DESIGN.md, "Synthetic ward video"): a room, a bed, a breathing patient, occasional caregiver
visits, three event kinds and three distractor kinds that a good classifier must *not* flag.

- Events (``EVENT_LABELS``) last 3-8 s, never overlap, are separated (and preceded/followed) by at least
  4 s of quiet, and each episode starts and ends with the patient in bed: a bed exit ends with the
  patient walking out of the frame, then the scene cuts back to the patient lying in bed; a fall
  starts with the patient standing by the bed (a cut in), drops to the floor and lies there until the
  scene cuts back to the bed. Rhythmic movement (1.0-1.5 Hz, large amplitude, visible at 4-8 fps
  sampling) happens in bed.
- Distractors (``DISTRACTOR_KINDS``) happen only in quiet periods, at least 1 s away from any event.
- Room colours, bed place, pillow side, door side and patient size vary per seed so a classifier has to
  generalise instead of memorising pixels.

Everything is a pure function of :class:`SynthConfig` (numpy ``default_rng`` seeded by ``seed``), so
the same config gives the same annotations and the same video.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import numpy as np

from ingest import _ward as ward
from ingest._raster import Box, clip_box

log = logging.getLogger(__name__)

__all__ = [
    "DISTRACTOR_KINDS",
    "EVENT_LABELS",
    "SYNTH_STARTED_AT",
    "SynthConfig",
    "SynthEvent",
    "SynthResult",
    "generate",
]

EVENT_LABELS: tuple[str, ...] = ("bed_exit", "fall", "rhythmic_movement")
DISTRACTOR_KINDS: tuple[str, ...] = ("lighting_change", "sensor_noise", "passer_by")
# Wall-clock start written as the MP4 creation_time and into annotations.json, fixed for determinism.
SYNTH_STARTED_AT = datetime(2024, 1, 15, 8, 0, 0, tzinfo=UTC)

_MIN_GAP = 4.0  # seconds of quiet before, between and after events
_EVENT_SECONDS = (3.0, 8.0)
_DISTRACTOR_SECONDS = {"lighting_change": (3.0, 6.0), "sensor_noise": (1.5, 3.0), "passer_by": (3.0, 5.0)}
_DISTRACTOR_MARGIN = 1.0  # seconds kept free between a distractor and any event
_VISIT_SECONDS = (5.0, 8.0)  # caregiver visits: background activity, not an event
_MILD_NOISE_FRAMES = 8
_STRONG_NOISE_FRAMES = 4


@dataclass(frozen=True)
class SynthConfig:
    """What to generate.

    Attributes:
        seconds: video length.
        seed: seeds every random choice (layout, schedule, noise).
        width, height: frame size in pixels (even, for yuv420p).
        fps: frames per second of the written video.
        events_per_minute: target rate of events; fewer are placed if they do not fit with the gaps.
        distractors_per_minute: target rate of distractors.
        labels: event labels to draw from (a subset of ``EVENT_LABELS``), cycled in shuffled rounds.
    """

    seconds: float = 120.0
    seed: int = 0
    width: int = 320
    height: int = 240
    fps: int = 15
    events_per_minute: float = 3.0
    distractors_per_minute: float = 2.0
    labels: tuple[str, ...] = EVENT_LABELS

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise ValueError("seconds must be positive")
        if self.width < 32 or self.height < 32 or self.width % 2 or self.height % 2:
            raise ValueError("width and height must be even and at least 32 (H.264 yuv420p)")
        if self.fps < 1:
            raise ValueError("fps must be at least 1")
        if self.events_per_minute < 0 or self.distractors_per_minute < 0:
            raise ValueError("rates must not be negative")
        unknown = set(self.labels) - set(EVENT_LABELS)
        if unknown:
            raise ValueError(f"unknown event labels {sorted(unknown)}; known: {EVENT_LABELS}")


@dataclass
class SynthEvent:
    """One annotated episode; for distractors ``label`` is the distractor kind.

    ``start``/``end`` are seconds on frame boundaries: frame ``i`` belongs to the episode when
    ``round(start * fps) <= i < round(end * fps)``.
    ``boxes`` holds ``(frame, t, x0, y0, x1, y1)`` for every frame of the episode in which the region is
    visible: integer pixels, ``0 <= x0 < x1 <= width`` (x1/y1 exclusive, numpy-slice style). The region
    is the patient for ``bed_exit``/``fall``, the moving limb (or the whole body) for
    ``rhythmic_movement``, the walker for ``passer_by`` and the whole frame for global distractors.
    """

    label: str
    start: float
    end: float
    boxes: list[tuple[int, float, int, int, int, int]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def union_box(self) -> tuple[int, int, int, int] | None:
        """Smallest box holding every per-frame box, or None when there is none."""
        if not self.boxes:
            return None
        b = np.array([bx[2:] for bx in self.boxes])
        return int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max())

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "start": self.start,
            "end": self.end,
            "params": self.params,
            "boxes": [list(b) for b in self.boxes],
        }


@dataclass
class SynthResult:
    """Paths written by :func:`generate` and the annotations in memory.

    ``background`` (an extension of the shared contract) lists caregiver visits: activity that is
    neither an event nor a distractor kind, annotated for completeness.
    """

    video: Path
    annotations_json: Path
    annotations_csv: Path
    events: list[SynthEvent]
    distractors: list[SynthEvent]
    config: SynthConfig
    background: list[SynthEvent] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Scheduling


@dataclass
class _Episode:
    """A scheduled episode plus the renderer-only plan (fall direction, oscillating part, ...)."""

    event: SynthEvent
    plan: Any = None

    def active(self, i: int, fps: int) -> bool:
        """Whether frame ``i`` belongs to the episode, compared in whole frames (times are rounded)."""
        return round(self.event.start * fps) <= i < round(self.event.end * fps)


def _snap(t: float, fps: int) -> float:
    """Round to a frame boundary so event edges coincide with frames."""
    return round(round(t * fps) / fps, 6)


def _snap_up(t: float, fps: int) -> float:
    """Round up to a frame boundary."""
    return round(math.ceil(t * fps - 1e-6) / fps, 6)


def _schedule_events(rng: np.random.Generator, config: SynthConfig) -> list[SynthEvent]:
    """Non-overlapping events of 3-8 s with at least ``_MIN_GAP`` s of quiet around each.

    Labels are drawn in shuffled rounds of ``config.labels`` so every label appears once before any
    repeats. When the target count does not fit in ``config.seconds`` the durations are first shrunk
    towards 3 s, then events are dropped. The spare time is split randomly (Dirichlet) among the gaps.
    """
    target = int(round(config.events_per_minute * config.seconds / 60.0)) if config.labels else 0
    labels: list[str] = []
    while len(labels) < target:
        labels.extend(config.labels[i] for i in rng.permutation(len(config.labels)))
    drawn = rng.uniform(*_EVENT_SECONDS, size=target)
    lo = _EVENT_SECONDS[0]
    durations: list[float] = []
    for n in range(target, 0, -1):
        # two frames per event are reserved for rounding starts and lengths up to whole frames
        available = config.seconds - (n + 1) * _MIN_GAP - 2.0 * n / config.fps
        if available < lo * n:
            continue
        d = drawn[:n]
        if d.sum() > available:  # shrink towards the minimum length, keeping the order of lengths
            d = lo + (d - lo) * (available - lo * n) / (d.sum() - lo * n)
        durations = [float(x) for x in d]
        break
    n = len(durations)
    if n == 0:
        return []
    # Starts and lengths are rounded *up* to whole frames, so gaps and lengths never shrink below their
    # minimum.
    slack = max(0.0, config.seconds - sum(durations) - (n + 1) * _MIN_GAP - 2.0 * n / config.fps)
    extra = rng.dirichlet(np.ones(n + 1)) * slack
    events: list[SynthEvent] = []
    t = _MIN_GAP + extra[0]
    for i, (label, dur) in enumerate(zip(labels, durations, strict=False)):
        start = _snap_up(t, config.fps)
        end = round(start + _snap_up(dur, config.fps), 6)
        events.append(SynthEvent(label=label, start=start, end=end))
        t = end + _MIN_GAP + extra[i + 1]
    return events


def _free_intervals(busy: list[tuple[float, float]], seconds: float, margin: float) -> list[list[float]]:
    """Complement of ``busy`` in [0, seconds], each busy interval widened by ``margin``."""
    free: list[list[float]] = []
    cursor = 0.0
    for s, e in sorted(busy):
        if s - margin > cursor:
            free.append([cursor, s - margin])
        cursor = max(cursor, e + margin)
    if cursor < seconds:
        free.append([cursor, seconds])
    return free


def _place(rng: np.random.Generator, free: list[list[float]], duration: float, fps: int) -> tuple[float, float] | None:
    """Place an interval of ``duration`` in one of the free intervals (chosen by spare room) and cut it out."""
    room = np.array([max(0.0, e - s - duration) for s, e in free])
    if room.size == 0 or room.max() <= 0:
        return None
    k = int(rng.choice(len(free), p=room / room.sum()))
    s0, e0 = free[k]
    start = _snap(s0 + rng.uniform(0, room[k]), fps)
    end = _snap(start + duration, fps)
    if end > e0:
        end = _snap(e0 - 0.5 / fps, fps)
    if end <= start:
        return None
    free[k : k + 1] = [iv for iv in ([s0, start - 0.5], [end + 0.5, e0]) if iv[1] - iv[0] > 0]
    return start, end


def _schedule_others(
    rng: np.random.Generator, config: SynthConfig, events: list[SynthEvent]
) -> tuple[list[SynthEvent], list[SynthEvent]]:
    """Distractors and caregiver visits, placed only in quiet time away from events."""
    free = _free_intervals([(e.start, e.end) for e in events], config.seconds, _DISTRACTOR_MARGIN)
    n = int(round(config.distractors_per_minute * config.seconds / 60.0))
    kinds: list[str] = []
    while len(kinds) < n:
        kinds.extend(DISTRACTOR_KINDS[i] for i in rng.permutation(len(DISTRACTOR_KINDS)))
    distractors = []
    for kind in kinds[:n]:
        placed = _place(rng, free, float(rng.uniform(*_DISTRACTOR_SECONDS[kind])), config.fps)
        if placed is None:
            log.debug("no quiet time left for a %s distractor", kind)
            continue
        distractors.append(SynthEvent(label=kind, start=placed[0], end=placed[1]))
    visits = []
    for _ in range(int(config.seconds // 60)):
        placed = _place(rng, free, float(rng.uniform(*_VISIT_SECONDS)), config.fps)
        if placed is not None:
            visits.append(SynthEvent(label="caregiver_visit", start=placed[0], end=placed[1]))
    return sorted(distractors, key=lambda e: e.start), sorted(visits, key=lambda e: e.start)


# --------------------------------------------------------------------------------------------------
# Rendering


class _Renderer:
    """Renders frame ``i`` of a scheduled video and the boxes of the episodes active in it."""

    def __init__(
        self,
        config: SynthConfig,
        room: ward.Room,
        rng: np.random.Generator,
        episodes: list[_Episode],
        others: list[_Episode],
    ) -> None:
        self.config = config
        self.room = room
        self.episodes = episodes
        self.others = others
        h, w = config.height, config.width
        # Sensor noise is precomputed (a few frames, picked at random per frame): drawing fresh
        # gaussian noise for every frame would cost more than everything else together.
        # Built one bank frame at a time in float32 to keep peak memory near one frame at 1080p.
        self.backgrounds = np.empty((_MILD_NOISE_FRAMES, h, w, 3), dtype=np.uint8)
        base = room.background.astype(np.float32)
        for k in range(_MILD_NOISE_FRAMES):
            noise = rng.standard_normal((h, w, 3), dtype=np.float32) * 2.0
            np.clip(base + noise, 0, 255, out=noise)
            self.backgrounds[k] = noise
        self.strong = np.empty((_STRONG_NOISE_FRAMES, h, w, 3), dtype=np.int16)
        for k in range(_STRONG_NOISE_FRAMES):
            noise = rng.standard_normal((h, w, 3), dtype=np.float32) * 32.0
            salt = rng.random((h, w, 1), dtype=np.float32)
            noise = np.where(salt < 0.015, 400.0, np.where(salt > 0.985, -400.0, noise))  # salt and pepper
            self.strong[k] = noise
        n = self.n_frames
        self.bank_index = rng.integers(_MILD_NOISE_FRAMES, size=n)
        self.strong_index = rng.integers(_STRONG_NOISE_FRAMES, size=n)

    @property
    def n_frames(self) -> int:
        return int(round(self.config.seconds * self.config.fps))

    def render(self, i: int) -> tuple[np.ndarray, list[tuple[SynthEvent, Box]]]:
        """Frame ``i`` as uint8 ``[H, W, 3]`` RGB, with ``(episode, region box)`` of active episodes."""
        t = i / self.config.fps
        img = self.backgrounds[self.bank_index[i]].copy()
        boxes: list[tuple[SynthEvent, Box]] = []
        effects: list[Callable[[np.ndarray], np.ndarray]] = []
        for ep in self.others:
            ev = ep.event
            if not ep.active(i, self.config.fps):
                continue
            a = (t - ev.start) / (ev.end - ev.start)
            if ev.label in ("passer_by", "caregiver_visit"):
                fig = self._visitor(ep, a, t)
                self._draw_behind_bed(img, fig)
                boxes.append((ev, fig.box()))
            elif ev.label == "lighting_change":
                effects.append(_lighting(ep.plan, a))
                boxes.append((ev, (0, 0, self.config.width, self.config.height)))
            elif ev.label == "sensor_noise":
                effects.append(_add_noise(self.strong[self.strong_index[i]]))
                boxes.append((ev, (0, 0, self.config.width, self.config.height)))
        active = next((ep for ep in self.episodes if ep.active(i, self.config.fps)), None)
        figure, region = self._patient(active, t)
        figure.draw(img)
        if active is not None:
            boxes.append((active.event, region))
        for effect in effects:
            img = effect(img)
        return img, boxes

    def _patient(self, ep: _Episode | None, t: float) -> tuple[ward.Figure, Box]:
        room = self.room
        if ep is None:
            fig = ward.pose_figure(ward.lying(room, t), room.patient, room.mirror_x)
            return fig, fig.box()
        ev = ep.event
        dur = ev.end - ev.start
        s = t - ev.start
        if ev.label == "bed_exit":
            fig = ward.pose_figure(ward.bed_exit(room, s / dur, t), room.patient, room.mirror_x)
            return fig, fig.box()
        if ev.label == "fall":
            fig = ward.pose_figure(ward.fall(room, ep.plan, s, dur, t), room.patient, None)
            return fig, fig.box()
        fig = ward.pose_figure(ward.rhythmic(room, ep.plan, s, dur, t), room.patient, room.mirror_x)
        return fig, fig.box(ward.RHYTHM_PARTS[ep.plan.part])

    def _visitor(self, ep: _Episode, a: float, t: float) -> ward.Figure:
        room = self.room
        body = ward.far_body(room)
        if ep.event.label == "passer_by":
            x_from, x_to = ep.plan
            return ward.pose_figure(ward.walker(room, x_from, x_to, a, t), body)
        # Caregiver: walk in from the door side to the bedside, stay, walk back out.
        door_x = room.width + body.length * 0.3 if room.door_right else -body.length * 0.3
        bedside = room.to_canonical_x(room.bed_x0 + 0.35 * (room.bed_x1 - room.bed_x0))
        if a < 0.35:
            return ward.pose_figure(ward.walker(room, door_x, bedside, a / 0.35, t), body)
        if a > 0.65:
            return ward.pose_figure(ward.walker(room, bedside, door_x, (a - 0.65) / 0.35, t), body)
        reach = 45.0 if bedside > room.bed_cx else 135.0
        stand = ward.walker(room, bedside, bedside, 0.0, 0.0)
        return ward.pose_figure(ward.Pose(**{**asdict(stand), "arm_a": reach}), body)

    def _draw_behind_bed(self, img: np.ndarray, fig: ward.Figure) -> None:
        """Draw a person behind the bed: draw, then put the bed's pixels back on top."""
        box = clip_box(fig.box(), self.config.width, self.config.height)
        if box is None:
            return
        fig.draw(img)
        x0, y0, x1, y1 = box
        x0, y0, x1, y1 = max(0, x0 - 2), max(0, y0 - 2), min(img.shape[1], x1 + 2), min(img.shape[0], y1 + 2)
        mask = self.room.bed_mask[y0:y1, x0:x1]
        img[y0:y1, x0:x1][mask] = self.room.bed_layer[y0:y1, x0:x1][mask]


def _add_noise(noise: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Add an int16 noise frame (gaussian plus saturating salt and pepper) to a uint8 frame."""

    def apply(img: np.ndarray) -> np.ndarray:
        return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)

    return apply


def _lighting(target: float, a: float) -> Callable[[np.ndarray], np.ndarray]:
    """Global brightness ramp to ``target`` (x brightness) over the first quarter, back over the last."""
    ramp = min(1.0, a / 0.25, (1.0 - a) / 0.25)
    factor = 1.0 + (target - 1.0) * ramp
    lut = np.clip(np.arange(256, dtype=np.float32) * factor, 0, 255).astype(np.uint8)
    return lambda x: lut[x]


def _plan(rng: np.random.Generator, room: ward.Room, ev: SynthEvent) -> _Episode:
    """Random per-episode choices, recorded in ``ev.params`` for the annotations."""
    if ev.label == "fall":
        plan = ward.plan_fall(room, rng)
        ev.params = {"direction": plan.direction, "stand_x": round(plan.stand_x, 2)}
        return _Episode(ev, plan)
    if ev.label == "rhythmic_movement":
        rplan = ward.RhythmPlan(part=str(rng.choice(["arm", "leg", "body"])), frequency=float(rng.uniform(1.0, 1.5)))
        ev.params = {"part": rplan.part, "frequency_hz": round(rplan.frequency, 4)}
        return _Episode(ev, rplan)
    if ev.label == "lighting_change":
        target = float(rng.choice([rng.uniform(0.45, 0.7), rng.uniform(1.3, 1.5)]))
        ev.params = {"brightness": round(target, 4)}
        return _Episode(ev, target)
    if ev.label == "passer_by":
        body_w = ward.far_body(room).length * 0.4
        xs = (-body_w, room.width + body_w)
        xs = xs if rng.integers(2) else xs[::-1]
        ev.params = {"direction": "right" if xs[1] > xs[0] else "left"}
        return _Episode(ev, xs)
    return _Episode(ev, None)


# --------------------------------------------------------------------------------------------------
# Output


def generate(out_dir: str | os.PathLike[str], config: SynthConfig, *, name: str = "ward.mp4") -> SynthResult:
    """Render ``config`` to ``out_dir/name`` (H.264 MP4) plus ``annotations.json`` and ``annotations.csv``.

    The MP4 is libx264, yuv420p, CRF 23, preset fast, with the ``moov`` atom first (faststart, for
    browser playback) and ``creation_time`` = :data:`SYNTH_STARTED_AT`. annotations.json holds the
    config, the video facts and every episode with per-frame boxes; annotations.csv has one row per
    *event* (not distractor): ``label,start,end,x0,y0,x1,y1`` with the union box.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layout_rng, schedule_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(3)
    )
    room = ward.make_room(layout_rng, config.width, config.height)
    events = _schedule_events(schedule_rng, config)
    distractors, visits = _schedule_others(schedule_rng, config, events)
    episodes = [_plan(schedule_rng, room, ev) for ev in events]
    others = [_plan(schedule_rng, room, ev) for ev in distractors + visits]
    renderer = _Renderer(config, room, noise_rng, episodes, others)

    video = out / name
    _write_video(video, renderer)
    json_path, csv_path = out / "annotations.json", out / "annotations.csv"
    _write_annotations(json_path, csv_path, video, config, events, distractors, visits, renderer.n_frames)
    log.info(
        "generated %s: %.0f s, %d events, %d distractors in %.1f s",
        video,
        config.seconds,
        len(events),
        len(distractors),
        time.perf_counter() - t0,
    )
    return SynthResult(video, json_path, csv_path, events, distractors, config, visits)


def _write_video(path: Path, renderer: _Renderer) -> None:
    config = renderer.config
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        container.metadata["creation_time"] = SYNTH_STARTED_AT.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        stream = container.add_stream("libx264", rate=config.fps)
        stream.width, stream.height, stream.pix_fmt = config.width, config.height, "yuv420p"
        # mbtree=0: with x264's macroblock-tree rate control the bitstream was measured to differ from
        # run to run (even single-threaded), which breaks "same seed, same video"; without it the
        # output is bit-identical and the quality difference is irrelevant for synthetic footage.
        stream.options = {"crf": "23", "preset": "fast", "x264-params": "mbtree=0"}
        for i in range(renderer.n_frames):
            img, boxes = renderer.render(i)
            t = round(i / config.fps, 6)
            for ev, box in boxes:
                clipped = clip_box(box, config.width, config.height)
                if clipped is not None:
                    ev.boxes.append((i, t, *clipped))
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _write_annotations(
    json_path: Path,
    csv_path: Path,
    video: Path,
    config: SynthConfig,
    events: list[SynthEvent],
    distractors: list[SynthEvent],
    visits: list[SynthEvent],
    n_frames: int,
) -> None:
    doc = {
        "version": 1,
        "video": video.name,
        "width": config.width,
        "height": config.height,
        "fps": config.fps,
        "frames": n_frames,
        "seconds": config.seconds,
        "started_at": SYNTH_STARTED_AT.isoformat(),
        "box_format": "frame, t, x0, y0, x1, y1 (pixels, x1/y1 exclusive)",
        "config": {**asdict(config), "labels": list(config.labels)},
        "events": [e.to_json() for e in events],
        "distractors": [e.to_json() for e in distractors],
        "background": [e.to_json() for e in visits],
    }
    json_path.write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["label", "start", "end", "x0", "y0", "x1", "y1"])
        for e in events:
            box = e.union_box()
            writer.writerow([e.label, f"{e.start:.6f}", f"{e.end:.6f}", *(box if box else ("", "", "", ""))])
