"""The attribution family's base class and the shape/target plumbing every method shares.

Shapes used throughout (N samples, C colour channels, T frames, K classes or feature channels):

* inputs: images ``[N, C, H, W]`` or clips ``[N, C, T, H, W]``, float;
* logits: ``[N, K]``;
* target layer output: ``[N, K, h, w]`` (2D net on images), ``[N, K, t, h, w]`` (3D net on
  clips) or ``[N*T', K, h, w]`` (2D net run per frame on clips, time folded into the batch
  sample-major, i.e. row ``n*T' + t``); all are brought to a canonical ``[N, K, *S]`` with
  ``S = (h, w)`` for images and ``S = (t, h, w)`` for clips.

A method subclasses :class:`Attribution` (or :class:`LayerAttribution` when it needs a target
layer) and overrides one thing: its ``attribute`` recipe, and for Grad-CAM-like methods
:meth:`GradCAM.channel_weights`. Forward instrumentation lives in :mod:`.trace`, backward passes
always go through :func:`torch.autograd.grad` (never ``.backward()``), so the caller's
parameters' ``.grad`` are never touched.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar, ParamSpec, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.attribution.errors import AttributionError
from model.attribution.trace import Trace, traced

__all__ = [
    "Attribution",
    "LayerAttribution",
    "Target",
    "TargetRule",
    "canonical_layer_map",
    "grad_enabled",
    "prepare_inputs",
    "resolve_layer",
    "resolve_targets",
    "target_scores",
    "upsample_map",
]

Target = int | Sequence[int] | Tensor | None
#: A target, or a rule choosing each sample's class from the (detached) logits ``[N, K] -> [N]``,
#: e.g. ATCON's "top class outside the background" (no label needed).
TargetRule = Target | Callable[[Tensor], Tensor]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def grad_enabled(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` with autograd recording, even if the caller is under ``no_grad`` or
    ``inference_mode`` (a worker scoring clips usually is): attribution *is* a backward pass.
    Both switches are thread-local, so nothing leaks to other threads."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with torch.inference_mode(False), torch.enable_grad():
            return fn(*args, **kwargs)

    return wrapper


def prepare_inputs(inputs: Tensor) -> Tensor:
    """Validate ``inputs`` and return a tensor that requires grad.

    A tensor that already requires grad is used as is, so a map of a *computed* input (ATCON's
    masked clip ``m * x``) stays differentiable through it; otherwise a detached alias is made to
    require grad (the caller's tensor is not modified). Inference-mode tensors are cloned out of
    inference mode so autograd can record them.
    """
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a tensor, got {type(inputs).__name__}")
    if inputs.dim() not in (4, 5):
        raise AttributionError(f"inputs must be images [N,C,H,W] or clips [N,C,T,H,W], got shape {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise AttributionError(f"inputs must be floating point, got {inputs.dtype}")
    if inputs.is_inference():
        with torch.inference_mode(False):
            inputs = inputs.clone()
    if inputs.requires_grad:
        return inputs
    return inputs.detach().requires_grad_(True)


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> nn.Module:
    """The target layer as a module of ``model`` (a dotted name like ``"layer4.1"`` works too)."""
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError as err:
            raise AttributionError(f"the model has no submodule {layer!r}") from err
    if not isinstance(layer, nn.Module):
        raise TypeError(f"layer must be an nn.Module or a submodule name, got {type(layer).__name__}")
    if not any(m is layer for m in model.modules()):
        raise AttributionError(f"the layer {type(layer).__name__} is not a submodule of the model")
    return layer


def resolve_targets(target: TargetRule, logits: Tensor) -> Tensor:
    """Class index per sample, ``int64 [N]``.

    ``None`` takes each sample's top-1 class from ``logits`` (no label needed, as in ATCON);
    an int applies to every sample; a sequence or tensor gives one class per sample; a callable
    is given the detached logits and returns one of those.
    """
    n, k = logits.shape
    if target is None:
        return logits.detach().argmax(dim=1)
    if callable(target) and not isinstance(target, Tensor):
        target = target(logits.detach())
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        out = torch.full((n,), int(target), dtype=torch.long, device=logits.device)
    else:
        out = torch.as_tensor(target, device=logits.device)
        if out.is_floating_point() or out.dtype == torch.bool:
            raise AttributionError(f"target must hold class indices, got dtype {out.dtype}")
        out = out.to(torch.long).reshape(-1)
        if out.numel() == 1 and n != 1:
            out = out.expand(n)
        if out.numel() != n:
            raise AttributionError(f"got {out.numel()} targets for {n} samples")
    if bool(((out < 0) | (out >= k)).any()):
        raise AttributionError(f"target {out.tolist()} out of range for {k} classes")
    return out


def target_scores(logits: Tensor, targets: Tensor) -> Tensor:
    """Sum over the batch of each sample's target logit: a scalar whose gradient is per sample.

    Samples do not interact in an eval-mode network, so ``d(sum)/d x_n = d logit_n / d x_n``;
    this is what lets one backward pass explain a whole batch (a BatchNorm in train mode would
    couple the samples: call ``model.eval()`` first).
    """
    return logits.gather(1, targets[:, None]).sum()


def canonical_layer_map(t: Tensor, n: int, *, clip: bool) -> Tensor:
    """Bring a layer output (or its gradient) to ``[N, K, h, w]`` (images) / ``[N, K, t, h, w]``.

    Handles 3D feature maps, 2D feature maps of a per-frame net on clips (``[N*T', K, h, w]``,
    sample-major), and vector features (``[N, K]`` or ``[N*T', K]``, treated as 1x1 maps).
    """
    shape = tuple(t.shape)
    if t.dim() == 2:
        t = t[:, :, None, None]
    if not clip:
        if t.dim() == 4 and t.shape[0] == n:
            return t
    else:
        if t.dim() == 5 and t.shape[0] == n:
            return t
        if t.dim() == 4 and t.shape[0] % n == 0:
            steps = t.shape[0] // n
            return t.reshape(n, steps, *t.shape[1:]).transpose(1, 2)
    kind = "clips [N,C,T,H,W]" if clip else "images [N,C,H,W]"
    raise AttributionError(
        f"cannot read the target layer's output of shape {shape} as a feature map for {n} {kind}; "
        "expected [N,K,h,w], [N,K,t,h,w], [N*T,K,h,w] (per-frame 2D net) or [N,K]"
    )


def upsample_map(cam: Tensor, size: Sequence[int]) -> Tensor:
    """Resize maps ``[N, *S]`` to ``[N, *size]``: bilinear for 2D, trilinear for 3D.

    ``align_corners=False`` (pixel centres), the convention of ``F.interpolate`` and of the
    common Grad-CAM implementations. A no-op when the sizes already match.
    """
    size = tuple(int(s) for s in size)
    if tuple(cam.shape[1:]) == size:
        return cam
    mode = {2: "bilinear", 3: "trilinear"}.get(len(size))
    if mode is None:
        raise AttributionError(f"cannot upsample a map to {len(size)} spatial dims")
    return F.interpolate(cam[:, None], size=size, mode=mode, align_corners=False)[:, 0]


class Attribution:
    """Base of the attribution family: owns the instrumented forward and the backward pass.

    Subclasses set :attr:`guided_relu` (the backward rule of ReLUs) and implement
    ``attribute``. Instances hold only the model and configuration, never per-call state, so
    one instance may serve several threads (each explaining its own copy of the model).
    """

    #: Whether ReLU backward follows the Guided Backprop rule (else plain gradients).
    guided_relu: ClassVar[bool] = False

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model

    def attribute(self, inputs: Tensor, target: Target = None) -> Tensor:  # pragma: no cover
        """Attribution maps for ``inputs``; see each method for shapes."""
        raise NotImplementedError

    @contextlib.contextmanager
    def _traced(self, x: Tensor, *, layer: nn.Module | None = None, guided: bool | None = None) -> Iterator[Trace]:
        """One instrumented forward pass; run the backward passes inside the block (see :func:`traced`)."""
        with traced(self.model, x, layer=layer, guided=self.guided_relu if guided is None else guided) as trace:
            yield trace

    @staticmethod
    def _gradients(
        score: Tensor, wrt: Sequence[Tensor], *, create_graph: bool, retain_graph: bool | None = None
    ) -> list[Tensor]:
        """``d score / d wrt`` without touching any ``.grad`` (zeros where unused)."""
        with torch.inference_mode(False), torch.enable_grad():
            grads = torch.autograd.grad(
                score,
                list(wrt),
                create_graph=create_graph,
                retain_graph=retain_graph,
                allow_unused=True,
            )
        return [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt, strict=True)]


class LayerAttribution(Attribution):
    """An attribution method that reads a target layer (Grad-CAM and relatives)."""

    def __init__(self, model: nn.Module, layer: nn.Module | str) -> None:
        super().__init__(model)
        self.layer = resolve_layer(model, layer)
