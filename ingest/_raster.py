"""Tiny numpy rasteriser for the synthetic ward video: filled capsules, ellipses and rectangles.

Why not OpenCV or PIL: we only need a handful of solid shapes per frame, and computing each one's
mask on the small window of pixels it can touch is a few vectorised numpy operations -- fast enough
to render two minutes of video in a few seconds, and one dependency fewer. Coordinates are float
pixels ``(x, y)`` with y pointing down; every function clips to the image and ignores shapes that lie
entirely outside it.
"""

from __future__ import annotations

import math

import numpy as np

Point = tuple[float, float]
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 (float pixels, x1/y1 exclusive)


def _window(img: np.ndarray, box: Box) -> tuple[int, int, int, int] | None:
    """Integer pixel window of ``box`` clipped to the image, or None when it is empty."""
    h, w = img.shape[:2]
    x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x1, y1 = min(w, math.ceil(box[2])), min(h, math.ceil(box[3]))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def capsule_box(p0: Point, p1: Point, radius: float) -> Box:
    """Bounding box of a capsule (a segment thickened by ``radius``)."""
    return (
        min(p0[0], p1[0]) - radius,
        min(p0[1], p1[1]) - radius,
        max(p0[0], p1[0]) + radius,
        max(p0[1], p1[1]) + radius,
    )


def fill_capsule(img: np.ndarray, p0: Point, p1: Point, radius: float, color: np.ndarray) -> None:
    """Fill the pixels within ``radius`` of the segment ``p0``-``p1`` (limbs, torsos)."""
    win = _window(img, capsule_box(p0, p1, radius))
    if win is None:
        return
    x0, y0, x1, y1 = win
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - p0[1]
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - p0[0]
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    length2 = dx * dx + dy * dy
    # Projection of each pixel onto the segment, clamped to its ends (a disc when the segment is a point).
    s = np.clip((xs * dx + ys * dy) / length2, 0.0, 1.0) if length2 > 1e-9 else np.zeros((1, 1), np.float32)
    ex, ey = xs - s * dx, ys - s * dy
    mask = ex * ex + ey * ey <= radius * radius
    img[y0:y1, x0:x1][mask] = color


def fill_ellipse(img: np.ndarray, center: Point, rx: float, ry: float, color: np.ndarray) -> None:
    """Fill an axis-aligned ellipse (heads, pillow)."""
    win = _window(img, (center[0] - rx, center[1] - ry, center[0] + rx, center[1] + ry))
    if win is None or rx <= 0 or ry <= 0:
        return
    x0, y0, x1, y1 = win
    ys = (np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - center[1]) / ry
    xs = (np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - center[0]) / rx
    img[y0:y1, x0:x1][xs * xs + ys * ys <= 1.0] = color


def fill_rect(img: np.ndarray, box: Box, color: np.ndarray) -> None:
    """Fill an axis-aligned rectangle (walls, bed frame, door)."""
    win = _window(img, box)
    if win is not None:
        x0, y0, x1, y1 = win
        img[y0:y1, x0:x1] = color


def vertical_gradient(height: int, width: int, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """float32 ``[height, width, 3]`` image blending ``top`` into ``bottom`` (soft room lighting)."""
    a = np.linspace(0.0, 1.0, max(height, 1), dtype=np.float32)[:, None, None]
    column = (1.0 - a) * top.astype(np.float32) + a * bottom.astype(np.float32)
    return np.broadcast_to(column, (height, width, 3)).copy()


def union(boxes: list[Box]) -> Box:
    """Smallest box containing all ``boxes``."""
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def clip_box(box: Box, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Integer ``(x0, y0, x1, y1)`` with ``0 <= x0 < x1 <= width`` (same for y), or None if empty."""
    x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x1, y1 = min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))
    if x1 <= x0 or y1 <= y0:
        return None
    return int(x0), int(y0), int(x1), int(y1)
