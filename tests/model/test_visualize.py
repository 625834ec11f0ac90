"""Tests for model.visualize: overlays, gradient images, image files and the overlay MP4."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from PIL import Image

from model.visualize import colormap_lut, gradient_image, heatmap_overlay, overlay_video, save_image


def _frame(h: int = 32, w: int = 48) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_jet_lut_ends_blue_and_red() -> None:
    lut = colormap_lut("jet")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert tuple(lut[0]) == (0, 0, 128)  # dark blue
    assert tuple(lut[-1]) == (128, 0, 0)  # dark red
    with pytest.raises(ValueError, match="unknown colour map"):
        colormap_lut("no-such-map")


def test_heatmap_overlay_shape_opacity_and_hotspot() -> None:
    frame = _frame()
    heat = torch.zeros(4, 6)
    heat[1, 4] = 1.0  # a hot spot at layer resolution, upsampled to the frame
    same = heatmap_overlay(frame, heat, opacity=0.0)
    assert same.dtype == np.uint8 and same.shape == frame.shape
    np.testing.assert_array_equal(same, frame)

    pure = heatmap_overlay(frame, heat, opacity=1.0)
    y, x = np.unravel_index(np.argmax(pure[:, :, 0].astype(int) - pure[:, :, 2]), pure.shape[:2])
    assert 8 <= y < 16 and 32 <= x < 40  # the reddest pixel sits in the hot cell
    assert tuple(pure[0, 0]) == tuple(colormap_lut("jet")[0])  # cold corner is the map's low end

    # A constant map means "no evidence": the low colour everywhere, never NaN.
    flat = heatmap_overlay(frame, np.full((4, 6), 3.0), opacity=1.0)
    assert (flat == colormap_lut("jet")[0]).all()


def test_heatmap_overlay_value_range_and_grey_frame() -> None:
    grey = np.full((8, 8), 100, dtype=np.uint8)
    out = heatmap_overlay(grey, np.full((8, 8), 0.5), opacity=1.0, value_range=(0.0, 1.0))
    assert out.shape == (8, 8, 3)
    assert (out == colormap_lut("jet")[128]).all()
    with pytest.raises(ValueError):
        heatmap_overlay(grey, np.zeros((2, 2, 2)))


def test_gradient_image_layouts() -> None:
    g = torch.randn(3, 10, 12)
    chw = gradient_image(g)
    hwc = gradient_image(g.permute(1, 2, 0).numpy())
    assert chw.shape == (10, 12, 3) and chw.dtype == np.uint8
    np.testing.assert_array_equal(chw, hwc)
    assert abs(float(chw.mean()) - 127.5) < 3  # grey-centred
    assert (gradient_image(torch.zeros(3, 4, 4)) == 128).all()  # no influence = grey
    assert gradient_image(np.ones((5, 5))).shape == (5, 5, 3)


def test_save_image_png_and_jpeg(tmp_path) -> None:
    img = _frame()
    png = save_image(img, tmp_path / "sub" / "a.png")
    np.testing.assert_array_equal(np.asarray(Image.open(png)), img)
    jpg = save_image(img, tmp_path / "a.jpg", quality=80)
    with Image.open(jpg) as im:
        assert im.format == "JPEG" and im.size == (48, 32)
    with pytest.raises(ValueError, match="suffix"):
        save_image(img, tmp_path / "a.gif")


def test_overlay_video_h264(tmp_path) -> None:
    frames = np.stack([_frame(33, 47)] * 6)  # odd size: padded to even for yuv420p
    heat = torch.rand(3, 5, 5)  # fewer time steps than frames (3D net temporal stride)
    out = overlay_video(frames, heat, tmp_path / "v" / "clip.mp4", fps=8.0)
    assert out.exists() and out.stat().st_size > 0
    assert [p.name for p in out.parent.iterdir()] == ["clip.mp4"]  # no temporary file left
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 6
    assert decoded[0].shape == (34, 48, 3)
    assert float(stream.average_rate) == pytest.approx(8.0)
