"""Still images: an image folder (``root/<class>/*.png|jpg``, single-label) and PASCAL VOC.

:func:`voc` reads ``JPEGImages/`` + ``Annotations/*.xml`` (multi-label, boxes as regions).
Images are clips of one frame (``T = 1``).
"""

from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model.training.training_data import TrainingData

__all__ = ["IMAGE_SUFFIXES", "image_folder", "voc"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")


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
