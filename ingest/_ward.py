"""The synthetic ward scene: room layout, people as stick figures, and the poses of each episode.

Why a separate module: :mod:`ingest.synthetic` decides *what happens when* (scheduling, annotations,
encoding); this module decides *what it looks like*. Everything here is a pure function of a seeded
layout and a time, so the same seed renders the same pixels.

Geometry: the camera looks at the room from the front; the bed is seen from the side. A person is a
stick figure of capsules posed by a hip position and absolute limb angles in degrees (0 = pointing
right, 90 = down, 180 = left, 270 = up -- image coordinates, y down). Poses of the patient in bed are
written for a bed with its pillow on the left ("canonical") and mirrored about the bed centre when
the layout puts the pillow on the right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ingest._raster import (
    Box,
    Point,
    capsule_box,
    fill_capsule,
    fill_ellipse,
    fill_rect,
    union,
    vertical_gradient,
)


def _rgb(values: np.ndarray | list[float]) -> np.ndarray:
    return np.clip(np.asarray(values, dtype=np.float32), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Body:
    """Segment lengths (pixels) and colours of one person."""

    torso: float
    leg: float
    arm: float
    head_r: float
    torso_r: float
    limb_r: float
    skin: np.ndarray
    shirt: np.ndarray
    pants: np.ndarray
    outline: np.ndarray

    @property
    def length(self) -> float:
        """Head-to-foot length in pixels."""
        return self.leg + self.torso + 2.3 * self.head_r

    def scaled(self, factor: float, **colours: np.ndarray) -> Body:
        """The same proportions at another scale (people further away look smaller)."""
        return replace(
            self,
            torso=self.torso * factor,
            leg=self.leg * factor,
            arm=self.arm * factor,
            head_r=self.head_r * factor,
            torso_r=self.torso_r * factor,
            limb_r=self.limb_r * factor,
            **colours,
        )


def make_body(length: float, skin: np.ndarray, shirt: np.ndarray, pants: np.ndarray) -> Body:
    """A body ``length`` pixels from head to foot with rough adult proportions."""
    unit = length / 1.0
    return Body(
        torso=0.36 * unit,
        leg=0.46 * unit,
        arm=0.33 * unit,
        head_r=0.078 * unit,
        torso_r=0.068 * unit,
        limb_r=0.032 * unit,
        skin=skin,
        shirt=shirt,
        pants=pants,
        outline=_rgb(np.minimum(shirt, pants).astype(np.float32) * 0.45),
    )


@dataclass(frozen=True)
class Pose:
    """Hip position (pixels) and absolute angles (degrees) of torso (hip to neck), legs and arms."""

    hip_x: float
    hip_y: float
    torso: float
    leg_a: float
    leg_b: float
    arm_a: float
    arm_b: float

    def lerp(self, other: Pose, a: float) -> Pose:
        """Linear blend, ``a`` = 0 gives ``self`` and 1 gives ``other``."""
        fields = ("hip_x", "hip_y", "torso", "leg_a", "leg_b", "arm_a", "arm_b")
        return Pose(**{f: (1 - a) * getattr(self, f) + a * getattr(other, f) for f in fields})


def _dir(deg: float) -> Point:
    rad = math.radians(deg)
    return math.cos(rad), math.sin(rad)


def _at(p: Point, deg: float, dist: float) -> Point:
    d = _dir(deg)
    return p[0] + d[0] * dist, p[1] + d[1] * dist


@dataclass(frozen=True)
class Figure:
    """A posed person as drawable parts: ``(name, p0, p1, radius, colour)`` capsules, head separately."""

    parts: tuple[tuple[str, Point, Point, float, np.ndarray], ...]
    head: Point
    head_r: float
    skin: np.ndarray
    outline: np.ndarray

    def box(self, names: tuple[str, ...] | None = None) -> Box:
        """Bounding box of the named parts (``"head"`` included by name), or of the whole figure."""
        boxes = [capsule_box(p0, p1, r) for n, p0, p1, r, _ in self.parts if names is None or n in names]
        if names is None or "head" in names:
            h, r = self.head, self.head_r
            boxes.append((h[0] - r, h[1] - r, h[0] + r, h[1] + r))
        return union(boxes)

    def draw(self, img: np.ndarray) -> None:
        """Draw outline first then fill, so overlapping limbs stay distinguishable."""
        for _, p0, p1, r, _c in self.parts:
            fill_capsule(img, p0, p1, r + 1.0, self.outline)
        for _, p0, p1, r, colour in self.parts:
            fill_capsule(img, p0, p1, r, colour)
        fill_ellipse(img, self.head, self.head_r + 1.0, self.head_r + 1.0, self.outline)
        fill_ellipse(img, self.head, self.head_r, self.head_r, self.skin)


def pose_figure(pose: Pose, body: Body, mirror_x: float | None = None) -> Figure:
    """Place a body in a pose; ``mirror_x`` reflects the result about that vertical line."""
    hip = (pose.hip_x, pose.hip_y)
    neck = _at(hip, pose.torso, body.torso)
    shoulder = _at(hip, pose.torso, body.torso * 0.86)
    head = _at(hip, pose.torso, body.torso + 1.15 * body.head_r)
    foot_a, foot_b = _at(hip, pose.leg_a, body.leg), _at(hip, pose.leg_b, body.leg)
    hand_a, hand_b = _at(shoulder, pose.arm_a, body.arm), _at(shoulder, pose.arm_b, body.arm)
    # Draw order: far limbs, torso, near limbs.
    parts: list[tuple[str, Point, Point, float, np.ndarray]] = [
        ("leg_b", hip, foot_b, body.limb_r * 1.25, body.pants),
        ("arm_b", shoulder, hand_b, body.limb_r, body.shirt),
        ("torso", hip, neck, body.torso_r, body.shirt),
        ("leg_a", hip, foot_a, body.limb_r * 1.25, body.pants),
        ("arm_a", shoulder, hand_a, body.limb_r, body.shirt),
    ]
    if mirror_x is not None:

        def m(p: Point) -> Point:
            return 2.0 * mirror_x - p[0], p[1]

        parts = [(n, m(a), m(b), r, c) for n, a, b, r, c in parts]
        head = m(head)
    return Figure(tuple(parts), head, body.head_r, body.skin, body.outline)


@dataclass(frozen=True)
class Room:
    """Layout of one seeded room, in pixels of a ``width`` x ``height`` frame."""

    width: int
    height: int
    horizon: float  # y of the wall/floor line
    bed_x0: float  # canonical bed extent (pillow on the left)
    bed_x1: float
    mattress_y: float  # y of the mattress top
    bed_floor_y: float  # y where the bed legs meet the floor
    near_floor_y: float  # y of the feet of someone standing in front of the bed
    far_floor_y: float  # y of the feet of someone walking behind the bed
    mirrored: bool  # pillow on the right
    door_right: bool
    patient: Body
    visitor: Body  # caregiver / passer-by (another colour, further away)
    background: np.ndarray  # uint8 [H, W, 3], room and bed
    bed_layer: np.ndarray  # uint8 [H, W, 3], only meaningful where bed_mask
    bed_mask: np.ndarray  # bool [H, W]

    @property
    def bed_cx(self) -> float:
        return 0.5 * (self.bed_x0 + self.bed_x1)

    @property
    def mirror_x(self) -> float | None:
        return self.bed_cx if self.mirrored else None

    def to_canonical_x(self, x: float) -> float:
        """Image x to canonical x (they differ only when the room is mirrored)."""
        return 2.0 * self.bed_cx - x if self.mirrored else x


_WALL_PALETTE = np.array([[205, 200, 185], [190, 205, 210], [215, 205, 190], [185, 195, 180], [200, 190, 200]])
_FLOOR_PALETTE = np.array([[120, 110, 95], [100, 110, 115], [140, 125, 100], [95, 100, 90], [130, 120, 125]])
_SKIN = np.array([[224, 172, 140], [198, 140, 100], [141, 85, 60], [236, 192, 160]])
_GOWN = np.array([[150, 185, 215], [160, 205, 175], [200, 200, 225], [135, 175, 190]])
_VISITOR = np.array([[40, 60, 120], [150, 40, 50], [40, 110, 100], [90, 50, 110]])


def make_room(rng: np.random.Generator, width: int, height: int) -> Room:
    """Draw a room layout and its static background from ``rng`` (colours, bed place, patient size)."""
    w, h = float(width), float(height)

    def jitter(colour: np.ndarray, amount: float = 12.0) -> np.ndarray:
        return _rgb(colour + rng.uniform(-amount, amount, 3))

    wall = jitter(_WALL_PALETTE[rng.integers(len(_WALL_PALETTE))])
    floor = jitter(_FLOOR_PALETTE[rng.integers(len(_FLOOR_PALETTE))])
    horizon = h * rng.uniform(0.42, 0.48)
    bed_len = w * rng.uniform(0.46, 0.54)
    bed_cx = w * rng.uniform(0.46, 0.56)
    mattress_y = h * rng.uniform(0.55, 0.6)
    bed_floor_y = mattress_y + h * rng.uniform(0.17, 0.2)
    near_floor_y = min(h * 0.95, bed_floor_y + h * 0.07)
    mirrored = bool(rng.integers(2))
    door_right = bool(rng.integers(2))
    patient = make_body(
        bed_len * rng.uniform(0.78, 0.86),
        skin=jitter(_SKIN[rng.integers(len(_SKIN))], 8),
        shirt=jitter(_GOWN[rng.integers(len(_GOWN))]),
        pants=jitter(_GOWN[rng.integers(len(_GOWN))] * 0.85),
    )
    visitor_colour = _VISITOR[rng.integers(len(_VISITOR))]
    visitor = make_body(
        patient.length * rng.uniform(0.85, 0.95),
        skin=jitter(_SKIN[rng.integers(len(_SKIN))], 8),
        shirt=jitter(visitor_colour),
        pants=jitter(visitor_colour * 0.7),
    )
    bed_x0, bed_x1 = bed_cx - bed_len / 2, bed_cx + bed_len / 2

    img = np.empty((height, width, 3), dtype=np.uint8)
    hz = int(round(horizon))
    img[:hz] = vertical_gradient(hz, width, wall * 1.05, wall * 0.9).clip(0, 255).astype(np.uint8)
    img[hz:] = vertical_gradient(height - hz, width, floor * 0.85, floor * 1.1).clip(0, 255).astype(np.uint8)
    fill_rect(img, (0, horizon - 0.015 * h, w, horizon + 0.005 * h), _rgb(wall * 0.7))  # skirting board
    door_w = 0.16 * w
    door_x0 = w * 0.03 if not door_right else w * 0.97 - door_w
    fill_rect(img, (door_x0, horizon - 0.36 * h, door_x0 + door_w, horizon), _rgb(wall * 0.55))
    fill_rect(img, (door_x0 + 0.01 * w, horizon - 0.35 * h, door_x0 + door_w - 0.01 * w, horizon), _rgb(wall * 0.75))
    knob_x = door_x0 + (0.8 if not door_right else 0.2) * door_w
    fill_ellipse(img, (knob_x, horizon - 0.17 * h), 0.008 * w + 1, 0.008 * w + 1, _rgb(wall * 0.35))
    win_x0 = w * 0.97 - 0.2 * w if not door_right else w * 0.03
    fill_rect(img, (win_x0, 0.08 * h, win_x0 + 0.2 * w, 0.28 * h), _rgb(wall * 0.6))
    fill_rect(img, (win_x0 + 0.01 * w, 0.09 * h, win_x0 + 0.19 * w, 0.27 * h), _rgb([215, 230, 245]))

    bed = np.zeros_like(img)
    mask = np.zeros((height, width), dtype=bool)
    frame_c = jitter(np.array([150.0, 150.0, 160.0]), 20)
    mattress_c = jitter(np.array([235.0, 235.0, 228.0]), 8)
    blanket_c = jitter(np.array([180.0, 190.0, 205.0]), 20)
    shapes: list[tuple[str, Box, np.ndarray]] = []
    leg_w = 0.018 * w + 1
    for lx in (bed_x0 + 0.03 * bed_len, bed_x1 - 0.03 * bed_len - leg_w):
        shapes.append(("rect", (lx, mattress_y, lx + leg_w, bed_floor_y), _rgb(frame_c * 0.7)))
    shapes.append(("rect", (bed_x0, mattress_y + 0.06 * h, bed_x1, mattress_y + 0.1 * h), frame_c))
    shapes.append(("rect", (bed_x0, mattress_y, bed_x1, mattress_y + 0.065 * h), mattress_c))
    shapes.append(("rect", (bed_x0 + 0.45 * bed_len, mattress_y + 0.008 * h, bed_x1, mattress_y + 0.06 * h), blanket_c))
    head_end = bed_x0 if not mirrored else bed_x1 - 0.025 * w
    shapes.append(("rect", (head_end, mattress_y - 0.14 * h, head_end + 0.025 * w, bed_floor_y), frame_c))
    pillow_x = bed_x0 + 0.1 * bed_len if not mirrored else bed_x1 - 0.1 * bed_len
    shapes.append(("ellipse", (pillow_x, mattress_y - 0.012 * h, 0.08 * bed_len, 0.025 * h), _rgb([245, 245, 245])))
    for kind, geom, colour in shapes:
        layer = np.zeros((height, width, 3), dtype=np.uint8)
        if kind == "rect":
            fill_rect(layer, geom, _rgb([255, 255, 255]))
        else:
            fill_ellipse(layer, (geom[0], geom[1]), geom[2], geom[3], _rgb([255, 255, 255]))
        m = layer[..., 0] > 0
        bed[m] = colour
        mask |= m
    img[mask] = bed[mask]
    return Room(
        width=width,
        height=height,
        horizon=horizon,
        bed_x0=bed_x0,
        bed_x1=bed_x1,
        mattress_y=mattress_y,
        bed_floor_y=bed_floor_y,
        near_floor_y=near_floor_y,
        far_floor_y=mattress_y + 0.05 * h,  # feet hidden behind the bed
        mirrored=mirrored,
        door_right=door_right,
        patient=patient,
        visitor=visitor,
        background=img,
        bed_layer=bed,
        bed_mask=mask,
    )


# ---------------------------------------------------------------------------------------------------
# Patient poses. All return (pose, mirror_x) for the patient's body at time t.


def _smooth(a: float) -> float:
    a = min(1.0, max(0.0, a))
    return a * a * (3 - 2 * a)


def lying(room: Room, t: float) -> Pose:
    """Lying on the back in bed (canonical: head on the pillow at the left), breathing.

    Breathing (0.25 Hz) and a slow drift of the arms keep "nothing happens" from being a frozen image.
    """
    body = room.patient
    head_x = room.bed_x0 + 0.1 * (room.bed_x1 - room.bed_x0)
    hip_x = head_x + body.torso + 1.15 * body.head_r
    breath = math.sin(2 * math.pi * 0.25 * t)
    drift = math.sin(2 * math.pi * 0.07 * t + 1.0)
    return Pose(
        hip_x=hip_x,
        hip_y=room.mattress_y - 0.8 * body.torso_r + 0.35 * breath,
        torso=180.0 + 0.6 * breath,
        leg_a=-1.0,
        leg_b=2.0,
        arm_a=8.0 + 3.0 * drift,
        arm_b=2.0 - 2.0 * drift,
    )


def bed_exit(room: Room, tau: float, t: float) -> Pose:
    """Sit up, swing the legs over the edge, stand, walk towards the door and out of the frame.

    ``tau`` in [0, 1] is the progress through the event; at ``tau = 1`` the hip reaches the frame edge
    on the door side so the patient is still partly visible on the last annotated frame.
    """
    body = room.patient
    lie = lying(room, t)
    sit = replace(lie, torso=270.0, leg_a=0.0, leg_b=3.0, arm_a=60.0, arm_b=70.0)
    edge_x = lie.hip_x + 0.05 * body.length
    dangle = Pose(edge_x, lie.hip_y, 268.0, 85.0, 95.0, 80.0, 95.0)
    stand_y = room.near_floor_y - body.leg
    stand = Pose(edge_x, stand_y, 270.0, 90.0, 90.0, 90.0, 90.0)
    if tau < 0.22:
        return lie.lerp(sit, _smooth(tau / 0.22))
    if tau < 0.38:
        return sit.lerp(dangle, _smooth((tau - 0.22) / 0.16))
    if tau < 0.5:
        return dangle.lerp(stand, _smooth((tau - 0.38) / 0.12))
    exit_x = room.to_canonical_x(room.width - 1.0 if room.door_right else 0.0)
    a = (tau - 0.5) / 0.5
    swing = math.sin(2 * math.pi * 1.6 * t)
    return Pose(
        hip_x=edge_x + (exit_x - edge_x) * a,
        hip_y=stand_y - 1.5 * abs(swing),
        torso=270.0,
        leg_a=90.0 + 22.0 * swing,
        leg_b=90.0 - 22.0 * swing,
        arm_a=90.0 - 18.0 * swing,
        arm_b=90.0 + 18.0 * swing,
    )


@dataclass(frozen=True)
class FallPlan:
    """Where (image x of the feet) and which way (+1 right, -1 left) the patient falls."""

    stand_x: float
    direction: int
    fall_seconds: float


def plan_fall(room: Room, rng: np.random.Generator) -> FallPlan:
    """Pick a standing place in front of the bed leaving room for the body on the floor."""
    length = room.patient.length
    direction = 1 if rng.integers(2) else -1
    margin = 0.04 * room.width
    lo, hi = margin + 0.5 * room.patient.torso_r, room.width - margin - length
    if hi <= lo:
        hi = lo + 1.0
    x = float(rng.uniform(lo, hi))
    stand_x = x if direction > 0 else room.width - x
    return FallPlan(stand_x=stand_x, direction=direction, fall_seconds=float(rng.uniform(0.5, 0.8)))


def fall(room: Room, plan: FallPlan, seconds_in: float, duration: float, t: float) -> Pose:
    """Standing by the bed (swaying), then dropping to the floor, then lying there.

    Image coordinates (no mirroring). The body pivots about the feet with a gravity-like ease-in
    (progress squared), so the hip ends ``leg`` pixels from the feet in the fall direction.
    """
    body = room.patient
    stand_y = room.near_floor_y - body.leg
    d = plan.direction
    sway = math.sin(2 * math.pi * 0.8 * t)
    stand = Pose(plan.stand_x, stand_y, 270.0 + 3.0 * sway, 90.0, 92.0, 90.0 + 4 * sway, 92.0 - 4 * sway)
    floor = Pose(
        plan.stand_x + d * body.leg,
        room.near_floor_y - 0.9 * body.torso_r,
        270.0 + d * 90.0,
        90.0 + d * 90.0,
        90.0 + d * 86.0,
        270.0 + d * 60.0,
        270.0 + d * 110.0,
    )
    t_fall = 0.3 * duration
    if seconds_in < t_fall:
        return stand
    q = (seconds_in - t_fall) / plan.fall_seconds
    if q < 1.0:
        return stand.lerp(floor, q * q)
    twitch = math.sin(2 * math.pi * 0.5 * t)
    return replace(floor, arm_a=floor.arm_a + 4.0 * twitch)


@dataclass(frozen=True)
class RhythmPlan:
    """Which part oscillates (``"arm"``, ``"leg"`` or ``"body"``) and how fast (Hz)."""

    part: str
    frequency: float


RHYTHM_PARTS: dict[str, tuple[str, ...] | None] = {"arm": ("arm_a",), "leg": ("leg_a",), "body": None}


def rhythmic(room: Room, plan: RhythmPlan, seconds_in: float, duration: float, t: float) -> Pose:
    """Lying in bed with one limb, or the whole body, oscillating with a large amplitude.

    The amplitude fades in and out over 0.3 s so the episode starts and ends in the resting pose.
    """
    lie = lying(room, t)
    env = min(1.0, seconds_in / 0.3, max(0.0, duration - seconds_in) / 0.3)
    s = env * math.sin(2 * math.pi * plan.frequency * seconds_in)
    c = env * math.cos(2 * math.pi * plan.frequency * seconds_in)
    if plan.part == "arm":
        return replace(lie, arm_a=lie.arm_a + env * -55.0 + 45.0 * s)
    if plan.part == "leg":
        return replace(lie, leg_a=lie.leg_a - env * 22.0 + 22.0 * s)
    amp = 0.07 * room.patient.length
    return replace(
        lie,
        hip_y=lie.hip_y - abs(s) * amp,
        hip_x=lie.hip_x + 0.4 * amp * c,
        torso=lie.torso + 7.0 * s,
        leg_a=lie.leg_a - 8.0 * s,
        leg_b=lie.leg_b - 8.0 * s,
        arm_a=lie.arm_a - 25.0 * s,
        arm_b=lie.arm_b - 20.0 * s,
    )


def walker(room: Room, x_from: float, x_to: float, a: float, t: float) -> Pose:
    """A visitor walking behind the bed from ``x_from`` to ``x_to`` (image x), ``a`` in [0, 1]."""
    body = far_body(room)
    swing = math.sin(2 * math.pi * 1.7 * t)
    return Pose(
        hip_x=x_from + (x_to - x_from) * a,
        hip_y=room.far_floor_y - body.leg - abs(swing),
        torso=270.0,
        leg_a=90.0 + 22.0 * swing,
        leg_b=90.0 - 22.0 * swing,
        arm_a=90.0 - 18.0 * swing,
        arm_b=90.0 + 18.0 * swing,
    )


def far_body(room: Room) -> Body:
    """The visitor's body as seen behind the bed (smaller: further from the camera)."""
    return room.visitor.scaled(0.8)
