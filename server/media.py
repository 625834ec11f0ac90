"""Explanation media for one event: key frame, Grad-CAM / Guided Backprop / Guided Grad-CAM overlays, the
per-frame Grad-CAM overlay video of the event's peak clip, and the low-resolution per-frame maps of the event's
clips that the browser draws over the playing clip (:mod:`server.frame_maps`). Files live under
``<data_dir>/media/events/<id>/``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ingest.decode import read_frames
from model.attribution import explain
from model.inference import frames_to_tensor
from model.nets import default_target_layer
from model.visualize import gradient_image, heatmap_overlay, overlay_video, save_image
from model.weights import LoadedModel
from server.frame_maps import MAP_METHODS, ClipFrames, event_maps, map_size, write_maps

log = logging.getLogger(__name__)

#: the largest side of stored overlays: enough to see a patient, small enough to load fast in a review queue.
MAX_OVERLAY_SIDE = 640


@dataclass
class RenderedExplanation:
    method: str
    overlay_path: Path
    video_path: Path | None
    agreement: float | None


@dataclass
class RenderedEvent:
    key_frame_time: float
    key_frame_path: Path
    explanations: list[RenderedExplanation]
    maps_path: Path | None = None


def _display_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, MAX_OVERLAY_SIDE / max(width, height))
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def _resize_map(values: torch.Tensor, height: int, width: int) -> np.ndarray:
    """[H0,W0] -> [H,W] bilinear, as float numpy."""
    resized = F.interpolate(values[None, None].float(), size=(height, width), mode="bilinear", align_corners=False)
    return resized[0, 0].cpu().numpy()


def _resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [H0,W0,3] -> [H,W,3] (nearest keeps the gradient image's pixels honest)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    resized = F.interpolate(tensor, size=(height, width), mode="nearest")
    return resized[0].permute(1, 2, 0).clamp(0, 255).byte().numpy()


def scored_frames(video_path: Path, times: Sequence[float], size: tuple[int, int]) -> np.ndarray:
    """The frames at ``times`` at the model's ``size`` exactly as the scorer saw them, so an explanation explains
    the very input that was scored: PyAV with the same swscale conversion as :func:`ingest.clips.iter_clips`.
    decord's own resize differs by up to 5 levels a pixel (scores by up to 0.003 on synthetic and camera-like
    video); for an event's window it is no faster (both decode every frame of it), and it indexes the whole file
    when it opens it."""
    return read_frames(video_path, times, size=size, backend="pyav")


def render_event_media(*, loaded: LoadedModel, video_path: Path, timestamps: list[float], label_index: int,
                       source_size: tuple[int, int], out_dir: Path,
                       methods: tuple[str, ...] = ("grad_cam", "guided_backprop", "guided_grad_cam"),
                       map_clips: Sequence[tuple[int, list[float]]] = (), peak_index: int | None = None,
                       ) -> RenderedEvent:
    """Explain the event's peak clip for ``label_index`` and write its media into ``out_dir``.

    ``timestamps`` are the sampled frame times (seconds) of the peak clip, exactly as it was scored; the frames
    are read again from the file, at the model's size and at a display size. ``map_clips`` are the
    ``(clip index, frame times)`` of the clips to store per-frame maps of (the peak clip, ``peak_index``, among
    them); their frames at the model's size are read in one pass.
    """
    wanted = sorted({round(float(t), 6) for _, times in map_clips for t in times} | {round(float(t), 6)
                                                                                       for t in timestamps})
    decoded = scored_frames(video_path, wanted, loaded.input_spec.size)             # [F,h,w,3]
    row = {t: i for i, t in enumerate(wanted)}

    def frames_at(times: Sequence[float]) -> np.ndarray:
        return decoded[[row[round(float(t), 6)] for t in times]]

    model_frames = frames_at(timestamps)                                            # [T,h,w,3]
    display_frames = read_frames(video_path, timestamps, size=_display_size(*source_size))  # [T,H,W,3]
    clips = [ClipFrames(index, list(times), frames_at(times)) for index, times in map_clips]
    return render_frames_media(loaded=loaded, model_frames=model_frames, display_frames=display_frames,
                               timestamps=timestamps, label_index=label_index, out_dir=out_dir, methods=methods,
                               map_clips=clips, peak_index=peak_index, maps_size=map_size(*source_size))


def render_frames_media(*, loaded: LoadedModel, model_frames: np.ndarray, display_frames: np.ndarray,
                        timestamps: list[float], label_index: int, out_dir: Path,
                        methods: tuple[str, ...] = ("grad_cam", "guided_backprop", "guided_grad_cam"),
                        map_clips: Sequence[ClipFrames] = (), peak_index: int | None = None,
                        maps_size: tuple[int, int] | None = None) -> RenderedEvent:
    """Explain a clip given as frames (uint8 ``[T,h,w,3]`` at the model's size, ``[T,H,W,3]`` for display).

    Live streams use this directly: their frames are not on disk to be read again. With ``map_clips`` (in time
    order; the peak clip is ``peak_index`` among their indices) the per-frame maps are written too, at
    ``maps_size`` (default: the display frames' aspect ratio); the peak clip's explanation is reused for them.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = loaded.input_spec
    height, width = display_frames.shape[1:3]
    inputs = frames_to_tensor(model_frames[None], spec).to(loaded.device)         # [1,3,T,h,w]
    wanted = tuple(dict.fromkeys(("grad_cam", *methods, *(MAP_METHODS if map_clips else ()), "agreement")))
    maps = explain(loaded.model, inputs, target=label_index, layer=default_target_layer(loaded.model),
                   methods=wanted)
    stored = event_maps(loaded, map_clips, label_index, maps_size or map_size(width, height),
                        explained={peak_index: maps} if peak_index is not None else None) if map_clips else None
    maps_path = write_maps(stored, out_dir) if stored is not None else None
    cam = maps["grad_cam"][0].detach()                                             # [T,h,w]
    # ATCON's similarity of the layer-resolution Grad-CAM and the channel-summed |Guided Backprop|, in [-1, 1]
    score = float(maps["agreement"][0])

    key = len(timestamps) // 2
    key_time = float(timestamps[key])
    key_frame = display_frames[key]
    key_frame_path = save_image(key_frame, out_dir / "key_frame.png")
    rendered: list[RenderedExplanation] = []

    cam_key = _resize_map(cam[key], height, width)
    overlay = save_image(heatmap_overlay(key_frame, cam_key), out_dir / "grad_cam.png")
    cams_full = np.stack([_resize_map(cam[t], height, width) for t in range(cam.shape[0])])
    video = overlay_video(display_frames, cams_full, out_dir / "grad_cam.mp4", fps=spec.sample_fps)
    rendered.append(RenderedExplanation("grad_cam", overlay, video, score))

    for method in ("guided_backprop", "guided_grad_cam"):
        if method not in methods:
            continue
        grad = maps[method][0, :, key].detach().cpu()                              # [3,h,w]
        image = _resize_image(gradient_image(grad), height, width)
        rendered.append(RenderedExplanation(method, save_image(image, out_dir / f"{method}.png"), None, score))
    return RenderedEvent(key_time, key_frame_path, rendered, maps_path)
