"""The one augmentation of training batches: clips (and images as one-frame clips) in pixel units.

Every training path (the demo recipe, fine-tune jobs, the experiment's baselines, controls and
ATCON runs) augments through :func:`augment_batch`, so a comparison between them never hides a
difference in augmentation. Draws come from a numpy Generator only, so runs are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AugmentConfig", "augment_batch"]


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of :func:`augment_batch` (0 or False disables one).

    The defaults are the demo recipe's, chosen for ward video: a room seen mirrored, a bed a few
    pixels off, other lighting and tints, the lighting-change and sensor-noise distractors.
    """

    hflip: bool = True
    shift: float = 0.08
    brightness: float = 0.25
    colour: float = 0.1
    ramp: float = 0.6
    noise: float = 0.1


def augment_batch(x: Tensor, rng: np.random.Generator, config: AugmentConfig) -> Tensor:
    """Random augmentation of clips ``[B, 3, T, H, W]`` in pixel units ([0, 1]); one draw per clip.

    * ``hflip``: mirror left-right half of the time (a ward seen from the other side);
    * ``shift``: translate by up to this fraction of H/W, borders replicated (bed placement);
    * ``brightness``: multiply by a gain in ``[1 - b, 1 + b]`` (room lighting);
    * ``colour``: per-channel gains in ``[1 - c, 1 + c]`` (wall, floor and gown tints);
    * ``ramp``: for half of the clips, a gain changing linearly over the clip by up to
      ``+-ramp``, mimicking the lighting-change distractor so that a brightness change over
      time is not taken for movement;
    * ``noise``: for a quarter of the clips, fresh Gaussian noise per frame with sigma up to
      this value, mimicking the sensor-noise distractor.

    Everything except ramp and noise is constant over a clip's frames, so augmentation never
    creates motion that could look like an event. The result is clamped to [0, 1].
    """
    b, _, t = x.shape[:3]
    out = _flip(x, rng) if config.hflip else x
    if config.shift > 0:
        out = _shift(out, rng, config.shift)
    gain = np.ones((b, 3, t), dtype=np.float32)
    if config.brightness > 0:
        gain *= rng.uniform(1 - config.brightness, 1 + config.brightness, size=(b, 1, 1))
    if config.colour > 0:
        gain *= rng.uniform(1 - config.colour, 1 + config.colour, size=(b, 3, 1))
    if config.ramp > 0:
        slope = rng.uniform(-config.ramp, config.ramp, size=(b, 1, 1)) * (rng.random((b, 1, 1)) < 0.5)
        gain *= 1.0 + slope * np.linspace(-0.5, 0.5, t, dtype=np.float32)[None, None, :]
    out = out * torch.from_numpy(gain.astype(np.float32)).to(out.device)[..., None, None]
    if config.noise > 0:
        sigma = rng.uniform(0, config.noise, size=b) * (rng.random(b) < 0.25)
        if sigma.any():
            scale = torch.from_numpy(sigma.astype(np.float32)).to(out.device).view(b, 1, 1, 1, 1)
            # A torch generator seeded from ``rng``: the noise is reproducible like every other draw.
            gen = torch.Generator(device=out.device).manual_seed(int(rng.integers(2**62)))
            noise = torch.randn(out.shape, generator=gen, dtype=out.dtype, device=out.device)
            out = out + noise * scale
    return out.clamp(0.0, 1.0)


def _flip(x: Tensor, rng: np.random.Generator) -> Tensor:
    flip = torch.from_numpy(rng.random(x.shape[0]) < 0.5).to(x.device)
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


def _shift(x: Tensor, rng: np.random.Generator, fraction: float) -> Tensor:
    """Integer translation of each clip by up to ``fraction`` of its size, borders replicated."""
    b = x.shape[0]
    h, w = x.shape[-2:]
    ph, pw = max(1, int(round(fraction * h))), max(1, int(round(fraction * w)))
    padded = F.pad(x.flatten(1, -3), (pw, pw, ph, ph), mode="replicate").view(*x.shape[:-2], h + 2 * ph, w + 2 * pw)
    dy = rng.integers(0, 2 * ph + 1, size=b)
    dx = rng.integers(0, 2 * pw + 1, size=b)
    return torch.stack([padded[i, ..., dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
