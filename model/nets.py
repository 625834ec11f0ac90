"""Clip classifiers: small 3D/2D CNNs for tests and the demo, torchvision ResNets for real use.

Every network maps clips ``[N, 3, T, H, W]`` (float, normalised, see
:func:`model.inference.frames_to_tensor`) to logits ``[N, K]``. The 2D networks (``tiny2d``,
``resnet18``, ``resnet50``) also take images ``[N, 3, H, W]``; on clips they fold time into the
batch, classify every frame and average the logits over T (temporal average pooling of scores).

Built like torchvision model files: typed ``nn.Module`` classes, a private builder per family and
keyword-only public factories. Weights are always randomly initialised here (``weights=None``):
nothing is ever downloaded at run time; trained weights come from a local checkpoint
(:mod:`model.weights`), pretrained starting points (ImageNet, Kinetics) from :mod:`model.pretrained`.

Two properties matter to the attribution code (:mod:`model.attribution`):

* every non-linearity is an ``nn.ReLU`` *module* (never ``F.relu``), and none is in-place,
  because Guided Backpropagation swaps the ReLU backward rule through module hooks, and a
  hooked in-place ReLU would overwrite the forward input the guided rule needs;
* :func:`default_target_layer` names the last convolutional block, whose output is the
  Grad-CAM / ATCON feature map.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.models.video import VideoResNet
from torchvision.models.video import r3d_18 as _tv_r3d_18

__all__ = [
    "ARCHITECTURES",
    "ConvBlock2d",
    "ConvBlock3d",
    "FrameResNet",
    "Tiny2D",
    "Tiny3D",
    "build_model",
    "default_target_layer",
    "is_video_arch",
    "r3d_18",
    "resnet18",
    "resnet50",
    "tiny2d",
    "tiny3d",
]

logger = logging.getLogger(__name__)

ARCHITECTURES: tuple[str, ...] = ("tiny3d", "tiny2d", "r3d_18", "resnet18", "resnet50")
_VIDEO_ARCHITECTURES = frozenset({"tiny3d", "r3d_18"})

# Channel widths of the tiny nets' conv blocks. Small enough that the weights stay well under
# 1 MB (float32) and a CPU forward pass on a 16x80x80 clip takes milliseconds, wide enough to
# learn the synthetic ward events.
_TINY_WIDTHS: tuple[int, ...] = (16, 32, 64, 64)


def is_video_arch(arch: str) -> bool:
    """True when ``arch`` convolves over time (3D kernels); False for per-frame 2D nets.

    Raises ``ValueError`` for an unknown architecture name.
    """
    _check_arch(arch)
    return arch in _VIDEO_ARCHITECTURES


def _check_arch(arch: str) -> None:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")


def _disable_inplace_relu(model: nn.Module) -> nn.Module:
    """Make every ``nn.ReLU`` out-of-place (torchvision builds them in-place).

    Why: module hooks that implement Guided Backprop need the ReLU's forward input intact, and
    PyTorch refuses full backward hooks on in-place outputs. The cost is one extra activation
    buffer per ReLU, negligible at our sizes.
    """
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return model


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


class ConvBlock3d(nn.Module):
    """Conv3d -> BatchNorm3d -> ReLU (its own module, out-of-place).

    Shapes: ``[N, C_in, T, H, W] -> [N, C_out, T', H', W']`` with the usual conv arithmetic
    (``padding = kernel // 2`` so only ``stride`` shrinks the map).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: tuple[int, int, int] = (3, 3, 3),
        stride: tuple[int, int, int] = (1, 1, 1),
    ) -> None:
        super().__init__()
        padding = tuple(k // 2 for k in kernel_size)
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class ConvBlock2d(nn.Module):
    """Conv2d -> BatchNorm2d -> ReLU; ``[N, C_in, H, W] -> [N, C_out, H', W']``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


def _init_weights(model: nn.Module) -> None:
    """Kaiming init for convs (ReLU nets), unit/zero BN, small normal for the classifier."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def _fold_time(x: Tensor, per_frame: Callable[[Tensor], Tensor]) -> Tensor:
    """Run a 2D classifier on images or clips.

    ``[N, 3, H, W]`` goes straight through. ``[N, 3, T, H, W]`` becomes ``[N*T, 3, H, W]``; the
    per-frame logits ``[N*T, K]`` are averaged over T to ``[N, K]`` (averaging logits rather
    than probabilities keeps the function smooth for attribution and training).
    """
    if x.dim() == 4:
        return per_frame(x)
    if x.dim() != 5:
        raise ValueError(f"expected images [N,3,H,W] or clips [N,3,T,H,W], got shape {tuple(x.shape)}")
    n, c, t, h, w = x.shape
    frames = x.transpose(1, 2).reshape(n * t, c, h, w)
    logits = per_frame(frames)
    return logits.view(n, t, -1).mean(dim=1)


# --------------------------------------------------------------------------------------------
# Tiny nets
# --------------------------------------------------------------------------------------------


class Tiny3D(nn.Module):
    """A small 3D CNN: conv blocks -> global average pool -> dropout -> linear.

    Input ``[N, 3, T, H, W]``; output logits ``[N, K]``. The first block uses a wide spatial
    kernel; the first three blocks halve H/W, the third also halves T, the last keeps the
    resolution. The demo's 8x60x80 clip thus ends as a 64-channel 4x8x10 map: fine enough for
    Grad-CAM to point at a region of the room, with a spatio-temporal receptive field (about
    33 px, 11 frames) that covers a person and a movement cycle. ``blocks[-1]`` is the
    attribution target layer.
    """

    def __init__(self, *, num_classes: int, widths: Sequence[int] = _TINY_WIDTHS, dropout: float = 0.2) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        blocks: list[nn.Module] = []
        in_ch = 3
        for i, out_ch in enumerate(widths):
            kernel = (3, 5, 5) if i == 0 else (3, 3, 3)
            stride = (1, 2, 2) if i < 2 else (2, 2, 2) if i < 3 else (1, 1, 1)
            blocks.append(ConvBlock3d(in_ch, out_ch, kernel_size=kernel, stride=stride))
            in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_ch, num_classes)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5:
            raise ValueError(f"tiny3d expects clips [N,3,T,H,W], got shape {tuple(x.shape)}")
        features = self.blocks(x)
        return self.fc(self.dropout(torch.flatten(self.avgpool(features), 1)))


class Tiny2D(nn.Module):
    """The 2D counterpart of :class:`Tiny3D`, applied per frame with temporal logit averaging.

    Images ``[N, 3, H, W]`` -> ``[N, K]``; clips ``[N, 3, T, H, W]`` -> ``[N, K]`` (the target
    layer then sees ``[N*T, C, h, w]``). ``blocks[-1]`` is the attribution target layer.
    """

    def __init__(self, *, num_classes: int, widths: Sequence[int] = _TINY_WIDTHS, dropout: float = 0.2) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        blocks: list[nn.Module] = []
        in_ch = 3
        for i, out_ch in enumerate(widths):
            kernel = 5 if i == 0 else 3
            stride = 2 if i < 3 else 1
            blocks.append(ConvBlock2d(in_ch, out_ch, kernel_size=kernel, stride=stride))
            in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_ch, num_classes)
        _init_weights(self)

    def _forward_frames(self, x: Tensor) -> Tensor:
        features = self.blocks(x)
        return self.fc(self.dropout(torch.flatten(self.avgpool(features), 1)))

    def forward(self, x: Tensor) -> Tensor:
        return _fold_time(x, self._forward_frames)


# --------------------------------------------------------------------------------------------
# torchvision ResNets
# --------------------------------------------------------------------------------------------


class FrameResNet(ResNet):
    """torchvision's image ResNet that also accepts clips (per frame, logits averaged over T).

    A subclass rather than a wrapper so that the module tree and ``state_dict`` keys are exactly
    torchvision's: ImageNet weights from a local file load with ``load_state_dict`` (minus
    ``fc``), and ``model.layer4[-1]`` is the usual Grad-CAM layer.
    """

    def forward(self, x: Tensor) -> Tensor:
        return _fold_time(x, self._forward_impl)


def _resnet(block: type[BasicBlock | Bottleneck], layers: list[int], *, num_classes: int) -> FrameResNet:
    """Private builder mirroring ``torchvision.models.resnet._resnet`` with ``weights=None``."""
    model = FrameResNet(block, layers, num_classes=num_classes)
    return _disable_inplace_relu(model)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Public keyword-only factories
# --------------------------------------------------------------------------------------------


def tiny3d(*, num_classes: int) -> Tiny3D:
    """Tiny 3D CNN (~0.2 M parameters) for tests and the CPU demo."""
    return Tiny3D(num_classes=num_classes)


def tiny2d(*, num_classes: int) -> Tiny2D:
    """Tiny per-frame 2D CNN (~0.06 M parameters) for tests and image inputs."""
    return Tiny2D(num_classes=num_classes)


def r3d_18(*, num_classes: int) -> VideoResNet:
    """torchvision ``r3d_18`` (18-layer 3D ResNet, the ATCON paper's clip model), random init,
    with a fresh ``fc`` of ``num_classes`` outputs. Clips only: ``[N, 3, T, H, W]``."""
    model = _tv_r3d_18(weights=None, num_classes=num_classes)
    return _disable_inplace_relu(model)  # type: ignore[return-value]


def resnet18(*, num_classes: int) -> FrameResNet:
    """torchvision ResNet-18 (random init, new ``fc``), per frame with temporal averaging."""
    return _resnet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)


def resnet50(*, num_classes: int) -> FrameResNet:
    """torchvision ResNet-50 (random init, new ``fc``), per frame with temporal averaging."""
    return _resnet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes)


_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "tiny3d": tiny3d,
    "tiny2d": tiny2d,
    "r3d_18": r3d_18,
    "resnet18": resnet18,
    "resnet50": resnet50,
}


def build_model(arch: str, *, num_classes: int) -> nn.Module:
    """Build ``arch`` with random weights and a ``num_classes``-way head (never downloads).

    Raises ``ValueError`` for an unknown architecture or ``num_classes < 1``.
    """
    _check_arch(arch)
    if num_classes < 1:
        raise ValueError("num_classes must be >= 1")
    return _FACTORIES[arch](num_classes=num_classes)


def default_target_layer(model: nn.Module) -> nn.Module:
    """The last convolutional block: Grad-CAM's and ATCON's feature layer.

    ``layer4[-1]`` for ResNets (2D and ``r3d_18``), ``blocks[-1]`` for the tiny nets. Its output
    is ``[N, C, h, w]`` for images, ``[N*T, C, h, w]`` for clips through a 2D net and
    ``[N, C, t, h, w]`` for 3D nets. Raises ``TypeError`` for a model of unknown structure.
    """
    if isinstance(model, ResNet | VideoResNet):
        return model.layer4[-1]
    if isinstance(model, Tiny3D | Tiny2D):
        return model.blocks[-1]
    raise TypeError(f"no default target layer for {type(model).__name__}; pass the layer explicitly")
