"""Small synthetic image datasets on disk, for tests, timing runs and the experiment harness.

``write_shapes_dataset`` draws one of ten outline/filled shapes per object (the class is the
shape; colour, size, position and background are random, so only the shape identifies it) and
writes either an image folder (``root/<class>/*.png``, one object per image) or the PASCAL VOC
layout (``JPEGImages/*.jpg`` + ``Annotations/*.xml`` with one to three objects and their boxes).
Deterministic for a given seed. Pixels are drawn with PIL (this module writes files: it is data
preparation, not model code).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

__all__ = ["SHAPES", "write_shapes_dataset"]

logger = logging.getLogger(__name__)

SHAPES: tuple[str, ...] = (
    "square",
    "disc",
    "triangle",
    "cross",
    "ring",
    "diamond",
    "hbar",
    "vbar",
    "x",
    "frame",
)


def _draw(draw: object, shape: str, box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> None:
    """Draw ``shape`` inside ``box`` = (x0, y0, x1, y1) (inclusive corners, PIL style)."""
    x0, y0, x1, y1 = box
    w = max(1, (x1 - x0) // 4)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    d = draw  # PIL.ImageDraw.ImageDraw
    if shape == "square":
        d.rectangle(box, fill=colour)  # type: ignore[attr-defined]
    elif shape == "disc":
        d.ellipse(box, fill=colour)  # type: ignore[attr-defined]
    elif shape == "triangle":
        d.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=colour)  # type: ignore[attr-defined]
    elif shape == "cross":
        d.rectangle((cx - w // 2, y0, cx + w // 2, y1), fill=colour)  # type: ignore[attr-defined]
        d.rectangle((x0, cy - w // 2, x1, cy + w // 2), fill=colour)  # type: ignore[attr-defined]
    elif shape == "ring":
        d.ellipse(box, outline=colour, width=w)  # type: ignore[attr-defined]
    elif shape == "diamond":
        d.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour)  # type: ignore[attr-defined]
    elif shape == "hbar":
        d.rectangle((x0, cy - w, x1, cy + w), fill=colour)  # type: ignore[attr-defined]
    elif shape == "vbar":
        d.rectangle((cx - w, y0, cx + w, y1), fill=colour)  # type: ignore[attr-defined]
    elif shape == "x":
        d.line((x0, y0, x1, y1), fill=colour, width=w)  # type: ignore[attr-defined]
        d.line((x0, y1, x1, y0), fill=colour, width=w)  # type: ignore[attr-defined]
    elif shape == "frame":
        d.rectangle(box, outline=colour, width=w)  # type: ignore[attr-defined]
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _canvas(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random smooth background plus pixel noise, uint8 ``[size, size, 3]``."""
    base = rng.integers(0, 256, size=3)
    grad = np.linspace(-1, 1, size)[None, :, None] * rng.uniform(-40, 40, size=3)
    noise = rng.normal(0, 12, size=(size, size, 3))
    return np.clip(base + grad + noise, 0, 255).astype(np.uint8)


def _colour(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    """A random colour far enough from the background's mean to be visible."""
    mean = background.reshape(-1, 3).mean(axis=0)
    for _ in range(20):
        c = rng.integers(0, 256, size=3)
        if np.abs(c - mean).sum() > 180:
            break
    return int(c[0]), int(c[1]), int(c[2])


def _object_box(rng: np.random.Generator, size: int) -> tuple[int, int, int, int]:
    side = int(rng.integers(max(6, size * 3 // 10), max(7, size * 6 // 10) + 1))
    x0 = int(rng.integers(0, size - side + 1))
    y0 = int(rng.integers(0, size - side + 1))
    return x0, y0, x0 + side - 1, y0 + side - 1


def write_shapes_dataset(
    root: str | os.PathLike[str],
    *,
    classes: int = 10,
    per_class: int = 200,
    size: int = 32,
    seed: int = 0,
    layout: str = "imagefolder",
    max_objects: int = 3,
) -> Path:
    """Write a shapes dataset under ``root`` and return ``root``.

    ``layout="imagefolder"``: ``per_class`` PNG images of one shape in each ``root/<shape>/``.
    ``layout="voc"``: ``classes * per_class`` JPEG images with 1..``max_objects`` shapes each,
    ``Annotations/<id>.xml`` listing every object's class and 1-based inclusive bndbox.
    """
    from PIL import Image, ImageDraw

    if not 1 <= classes <= len(SHAPES):
        raise ValueError(f"classes must be in 1..{len(SHAPES)}")
    out = Path(root)
    rng = np.random.default_rng(seed)
    names = SHAPES[:classes]
    if layout == "imagefolder":
        for k, name in enumerate(names):
            folder = out / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                bg = _canvas(rng, size)
                img = Image.fromarray(bg)
                _draw(ImageDraw.Draw(img), name, _object_box(rng, size), _colour(rng, bg))
                img.save(folder / f"{k:02d}_{i:05d}.png")
    elif layout == "voc":
        (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (out / "Annotations").mkdir(parents=True, exist_ok=True)
        for i in range(classes * per_class):
            bg = _canvas(rng, size)
            img = Image.fromarray(bg)
            draw = ImageDraw.Draw(img)
            objects = []
            for _ in range(int(rng.integers(1, max_objects + 1))):
                name = names[int(rng.integers(0, classes))]
                box = _object_box(rng, size)
                _draw(draw, name, box, _colour(rng, bg))
                objects.append((name, box))
            stem = f"{i:06d}"
            img.save(out / "JPEGImages" / f"{stem}.jpg", quality=95)
            (out / "Annotations" / f"{stem}.xml").write_text(_voc_xml(stem, size, objects))
    else:
        raise ValueError(f"layout must be 'imagefolder' or 'voc', got {layout!r}")
    logger.info("wrote %s shapes dataset (%d classes) to %s", layout, classes, out)
    return out


def _voc_xml(stem: str, size: int, objects: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    parts = [
        f"<annotation><filename>{stem}.jpg</filename>",
        f"<size><width>{size}</width><height>{size}</height><depth>3</depth></size>",
    ]
    for name, (x0, y0, x1, y1) in objects:
        # VOC convention: 1-based, inclusive corners.
        parts.append(
            f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x0 + 1}</xmin>"
            f"<ymin>{y0 + 1}</ymin><xmax>{x1 + 1}</xmax><ymax>{y1 + 1}</ymax></bndbox></object>"
        )
    parts.append("</annotation>")
    return "".join(parts)
