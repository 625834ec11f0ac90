"""Turn attribution maps into pictures and videos a clinician can look at.

The only module of :mod:`model` that touches numpy images, PIL and colour maps: the attribution
engine (:mod:`model.attribution`) returns raw, unnormalised tensors; normalising them for display
happens here, once, so the numbers stored and trained on are never display-scaled.

Conventions: frames are ``uint8`` RGB ``[H, W, 3]`` (a clip is ``[T, H, W, 3]``); heatmaps are
2D ``[h, w]`` (any resolution, any float range; resized bilinearly to the frame and min-max
normalised); gradients are ``[3, H, W]`` or ``[H, W, 3]``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = ["colormap_lut", "gradient_image", "heatmap_overlay", "overlay_video", "save_image"]

logger = logging.getLogger(__name__)

_EPS = 1e-8

ArrayLike = np.ndarray | torch.Tensor


def _to_numpy(x: ArrayLike) -> np.ndarray:
    """Detach a tensor (any device, any dtype) or pass an array through, as float32 numpy."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x, dtype=np.float32)


def _jet_lut() -> np.ndarray:
    """The classic 'jet' colour map as a 256x3 uint8 table (piecewise linear, as in MATLAB)."""
    x = np.linspace(0.0, 1.0, 256, dtype=np.float32)
    r = np.clip(1.5 - np.abs(4.0 * x - 3.0), 0.0, 1.0)
    g = np.clip(1.5 - np.abs(4.0 * x - 2.0), 0.0, 1.0)
    b = np.clip(1.5 - np.abs(4.0 * x - 1.0), 0.0, 1.0)
    return np.round(np.stack([r, g, b], axis=1) * 255.0).astype(np.uint8)


def colormap_lut(colormap: str | np.ndarray = "jet") -> np.ndarray:
    """A 256x3 uint8 lookup table for ``colormap``.

    ``"jet"`` and ``"gray"`` are built in; any other name (``"viridis"``, ``"inferno"``,
    ``"turbo"``, ...) is taken from matplotlib when it is installed. An array ``[256, 3]``
    (uint8, or float in [0, 1]) is used as given. Raises ``ValueError`` for an unknown name.
    """
    if isinstance(colormap, np.ndarray):
        lut = colormap
        if lut.shape != (256, 3):
            raise ValueError(f"a colour map table must be [256, 3], got {lut.shape}")
        if lut.dtype != np.uint8:
            lut = np.round(np.clip(lut, 0.0, 1.0) * 255.0).astype(np.uint8)
        return lut
    name = colormap.lower()
    if name == "jet":
        return _jet_lut()
    if name in ("gray", "grey"):
        return np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    try:
        from matplotlib import colormaps  # optional: only for the extra colour maps
    except ImportError as err:  # pragma: no cover - matplotlib is usually present
        raise ValueError(f"unknown colour map {colormap!r} (built in: jet, gray)") from err
    if name not in colormaps:
        raise ValueError(f"unknown colour map {colormap!r}")
    rgba = colormaps[name](np.linspace(0.0, 1.0, 256))
    return np.round(rgba[:, :3] * 255.0).astype(np.uint8)


def _as_rgb_frame(frame: ArrayLike) -> np.ndarray:
    """uint8 ``[H, W, 3]`` from uint8/float ``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]``.

    Float frames are taken to be in [0, 1] (as the model sees them before normalisation).
    """
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu().numpy()
    arr = np.asarray(frame)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise ValueError(f"expected a frame [H, W, 3] or [H, W], got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.dtype != np.uint8:
        arr = np.round(np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    return arr


def _resize_map(heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a float ``[h, w]`` map to ``[height, width]`` (no-op when equal)."""
    if heatmap.shape == (height, width):
        return heatmap
    image = Image.fromarray(np.ascontiguousarray(heatmap, dtype=np.float32))  # mode "F"
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def _normalise(heatmap: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
    """Min-max scale to [0, 1]; a constant map becomes all zeros (no evidence), never NaN."""
    heatmap = np.nan_to_num(heatmap, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = value_range if value_range is not None else (float(heatmap.min()), float(heatmap.max()))
    if hi - lo < _EPS:
        return np.zeros_like(heatmap)
    return np.clip((heatmap - lo) / (hi - lo), 0.0, 1.0)


def heatmap_overlay(
    frame: np.ndarray,
    heatmap: np.ndarray | torch.Tensor,
    *,
    colormap: str | np.ndarray = "jet",
    opacity: float = 0.45,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Blend a colour-mapped heatmap over a frame.

    Args:
        frame: uint8 RGB ``[H, W, 3]`` (or ``[H, W]``; float frames are read as [0, 1]).
        heatmap: ``[h, w]`` (or ``[1, h, w]``) map of any range, e.g. a Grad-CAM map at layer or
            input resolution. Resized bilinearly to ``H x W``.
        colormap: colour map name or a ``[256, 3]`` table, see :func:`colormap_lut`.
        opacity: weight of the heatmap colour in [0, 1]; 0 returns the frame unchanged.
        value_range: ``(low, high)`` mapped to the ends of the colour map. ``None`` (default)
            min-max normalises this map alone; pass a shared range to compare several maps
            (:func:`overlay_video` does, over a whole clip).

    Returns:
        uint8 RGB ``[H, W, 3]``.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    rgb = _as_rgb_frame(frame)
    hm = _to_numpy(heatmap)
    if hm.ndim == 3 and hm.shape[0] == 1:
        hm = hm[0]
    if hm.ndim != 2:
        raise ValueError(f"expected a 2D heatmap [h, w], got shape {hm.shape}")
    height, width = rgb.shape[:2]
    scaled = _normalise(_resize_map(hm, height, width), value_range)
    colour = colormap_lut(colormap)[np.round(scaled * 255.0).astype(np.intp)]
    blended = (1.0 - opacity) * rgb.astype(np.float32) + opacity * colour.astype(np.float32)
    return np.round(blended).clip(0, 255).astype(np.uint8)


def save_image(image: np.ndarray, path: str | os.PathLike[str], *, quality: int = 90) -> Path:
    """Write a uint8 RGB ``[H, W, 3]`` (or grey ``[H, W]``) image; format from the suffix.

    ``.png`` is lossless; ``.jpg`` / ``.jpeg`` uses ``quality`` (1-95, PIL's scale). Parent
    directories are created. Returns the path written.
    """
    out = Path(path)
    suffix = out.suffix.lower()
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"expected an image [H, W, 3] or [H, W], got shape {arr.shape}")
    out.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(arr)
    if suffix == ".png":
        pil.save(out, format="PNG")
    elif suffix in (".jpg", ".jpeg"):
        if not 1 <= quality <= 95:
            raise ValueError(f"JPEG quality must be in 1..95, got {quality}")
        pil.save(out, format="JPEG", quality=quality)
    else:
        raise ValueError(f"unsupported image suffix {out.suffix!r}; use .png, .jpg or .jpeg")
    return out


def gradient_image(grad: torch.Tensor | np.ndarray) -> np.ndarray:
    """Render an input-space gradient (Guided Backprop, Guided Grad-CAM, IG) as a picture.

    The gradient is centred, scaled to unit standard deviation, then squeezed into grey-centred
    colours (``0.5 + 0.1 * z``, clipped): the usual rendering of Springenberg et al. (2015)
    and pytorch-grad-cam, where grey means "no influence" and colour shows the sign per channel.

    Args:
        grad: ``[3, H, W]`` or ``[1, H, W]`` (channels first, as the model's input) or
            ``[H, W, 3]`` / ``[H, W]``.

    Returns:
        uint8 RGB ``[H, W, 3]``.
    """
    g = _to_numpy(grad)
    if g.ndim == 2:
        g = g[:, :, None]
    elif g.ndim == 3 and g.shape[0] in (1, 3) and g.shape[2] not in (1, 3):
        g = np.transpose(g, (1, 2, 0))
    elif g.ndim == 3 and g.shape[0] in (1, 3) and isinstance(grad, torch.Tensor):
        g = np.transpose(g, (1, 2, 0))  # ambiguous tiny shapes: tensors are channels-first
    if g.ndim != 3 or g.shape[2] not in (1, 3):
        raise ValueError(f"expected a gradient [3, H, W] or [H, W, 3], got shape {np.shape(grad)}")
    g = np.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
    g = (g - g.mean()) / (g.std() + 1e-5)
    g = np.clip(0.5 + 0.1 * g, 0.0, 1.0)
    if g.shape[2] == 1:
        g = np.repeat(g, 3, axis=2)
    return np.round(g * 255.0).astype(np.uint8)


def _heatmap_stack(heatmaps: ArrayLike | Sequence[ArrayLike], frames: int) -> np.ndarray:
    """Float ``[frames, h, w]`` from ``[T', h, w]`` maps, resampled in time by nearest index."""
    if isinstance(heatmaps, np.ndarray | torch.Tensor):
        stack = _to_numpy(heatmaps)
    else:
        stack = np.stack([_to_numpy(h) for h in heatmaps])
    if stack.ndim == 4 and stack.shape[1] == 1:
        stack = stack[:, 0]
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3 or stack.shape[0] < 1:
        raise ValueError(f"expected heatmaps [T, h, w], got shape {stack.shape}")
    if stack.shape[0] != frames:
        # Grad-CAM of a 3D net has fewer time steps than the clip has frames (temporal
        # stride): show each frame the map of the time step it falls in.
        index = np.minimum((np.arange(frames) * stack.shape[0]) // frames, stack.shape[0] - 1)
        stack = stack[index]
    return stack


def overlay_video(
    frames: np.ndarray,
    heatmaps: ArrayLike | Sequence[ArrayLike],
    path: str | os.PathLike[str],
    *,
    fps: float,
    colormap: str | np.ndarray = "jet",
    opacity: float = 0.45,
    crf: int = 23,
) -> Path:
    """Write a per-frame heatmap overlay of a whole clip as an H.264 MP4 (PyAV, yuv420p).

    Args:
        frames: uint8 RGB ``[T, H, W, 3]``, the clip as shown to the reviewer (any size).
        heatmaps: ``[T', h, w]`` maps (tensor, array or list), e.g. Grad-CAM ``[T, H, W]`` of
            one sample. ``T' != T`` is resampled in time by nearest index; each map is resized
            to the frame. All maps share one min-max range over the clip, so a frame with weak
            evidence looks weak instead of being stretched to full colour.
        path: output ``.mp4``; written to a temporary file in the same directory and renamed
            into place, so a crash never leaves a truncated video under the final name.
        fps: frames per second of the output (the clip's sampling rate).
        colormap, opacity: as in :func:`heatmap_overlay`.
        crf: x264 constant rate factor (lower = better quality, larger file).

    Odd frame sizes are padded by one edge pixel (yuv420p needs even width and height); the
    file has ``faststart`` so browsers can play it while it downloads. Returns the path.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    clip = np.asarray(frames)
    if clip.ndim != 4 or clip.shape[3] != 3 or clip.shape[0] < 1:
        raise ValueError(f"expected frames [T, H, W, 3] with T >= 1, got shape {clip.shape}")
    stack = _heatmap_stack(heatmaps, clip.shape[0])
    finite = np.nan_to_num(stack, nan=0.0, posinf=0.0, neginf=0.0)
    value_range = (float(finite.min()), float(finite.max()))

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".partial.mp4", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    height, width = clip.shape[1:3]
    pad_h, pad_w = height % 2, width % 2
    try:
        _encode_h264(
            (
                np.pad(
                    heatmap_overlay(frame, hm, colormap=colormap, opacity=opacity, value_range=value_range),
                    ((0, pad_h), (0, pad_w), (0, 0)),
                    mode="edge",
                )
                for frame, hm in zip(clip, finite, strict=True)
            ),
            tmp,
            width=width + pad_w,
            height=height + pad_h,
            fps=fps,
            crf=crf,
        )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _encode_h264(images, path: Path, *, width: int, height: int, fps: float, crf: int) -> None:
    """Encode uint8 RGB ``[height, width, 3]`` images to an H.264 MP4 at ``fps``."""
    import av  # local import: only video writing needs PyAV

    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for image in images:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
