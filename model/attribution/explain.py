"""``explain()``: several explanations of one batch at the cost of (about) one.

What the worker calls for every flagged event: Grad-CAM, Guided Backprop and Guided Grad-CAM
from one forward and one backward pass (see :mod:`.fused`), plus, on request, the agreement
score and Integrated Gradients (which has its own path integral and cannot share the pass).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from model.attribution.base import Target, grad_enabled, prepare_inputs, resolve_layer, resolve_targets, target_scores
from model.attribution.consistency import ATCONConfig, consistency
from model.attribution.errors import AttributionError
from model.attribution.fused import FusedMaps, fused_step
from model.attribution.grad_cam import GradCAM
from model.attribution.guided_grad_cam import combine
from model.attribution.integrated_gradients import IntegratedGradients
from model.attribution.trace import traced

__all__ = ["DEFAULT_METHODS", "METHODS", "explain"]

#: Every name ``explain`` understands, in the order results are computed.
METHODS: tuple[str, ...] = (
    "grad_cam",
    "guided_backprop",
    "guided_grad_cam",
    "agreement",
    "integrated_gradients",
)
DEFAULT_METHODS: tuple[str, ...] = ("grad_cam", "guided_backprop", "guided_grad_cam")

# The agreement is computed from the fused maps (its own Grad-CAM weights come from their layer gradient).
_NEEDS_CAM = frozenset({"grad_cam", "guided_grad_cam", "agreement"})
_NEEDS_GUIDED = frozenset({"guided_backprop", "guided_grad_cam", "agreement"})


@grad_enabled
def explain(
    model: nn.Module,
    inputs: Tensor,
    target: Target = None,
    *,
    layer: nn.Module | str,
    methods: Sequence[str] = DEFAULT_METHODS,
    per_time_step: bool = False,
    create_graph: bool = False,
    ig_steps: int = 50,
    ig_internal_batch_size: int | None = None,
    agreement_config: ATCONConfig | None = None,
) -> dict[str, Tensor]:
    """Explain ``model``'s decision on ``inputs`` with several methods at once.

    Args:
        model: the classifier (``[N, C, H, W]`` or ``[N, C, T, H, W]`` -> logits ``[N, K]``),
            in eval mode for batch-independent maps.
        inputs: images ``[N, C, H, W]`` or clips ``[N, C, T, H, W]``.
        target: int, one int per sample, tensor ``[N]`` or ``None`` (predicted class). All
            methods explain the same class per sample.
        layer: Grad-CAM's layer (module or dotted name), e.g. ``model.layer4[-1]``.
        methods: any of :data:`METHODS`:

            * ``grad_cam``: ``[N, H, W]`` / ``[N, T, H, W]``, ReLU'd, upsampled to the input,
              not normalised (as :class:`GradCAM` defaults);
            * ``guided_backprop``: same shape as ``inputs``;
            * ``guided_grad_cam``: same shape as ``inputs``;
            * ``agreement``: ``[N]``, ATCON's consistency of Grad-CAM and Guided Backprop
              (:func:`~model.attribution.consistency.consistency`: the very score ATCON
              fine-tuning maximises; in [-1, 1] for the default Pearson similarity), from the
              fused maps plus one masked Grad-CAM pass;
            * ``integrated_gradients``: same shape as ``inputs`` (zero baseline, ``ig_steps``
              Gauss-Legendre points, its own passes).
        per_time_step: clips: Grad-CAM weights per time step.
        create_graph: keep every result differentiable.
        ig_steps, ig_internal_batch_size: Integrated Gradients settings.
        agreement_config: ATCON options of the ``agreement`` score (default: ATCON.md's
            default configuration, the one fine-tuning uses unless told otherwise).

    Returns:
        ``{method: tensor}`` in the order of ``methods``.

    Grad-CAM and Guided Backprop share one forward pass and, when no ``nn.ReLU`` runs after
    ``layer`` (checked on every call), one backward pass; otherwise a second, short backward
    pass gives Grad-CAM its plain gradients, and a log line says so.
    """
    wanted = _check_methods(methods)
    layer_module = resolve_layer(model, layer)
    x = prepare_inputs(inputs)
    targets, cam, guided, maps = _base_maps(
        model, x, layer_module, target, wanted, per_time_step=per_time_step, create_graph=create_graph
    )
    cam_up = None if cam is None else GradCAM.finish(cam, x, relu=True, upsample=True, create_graph=create_graph)
    results: dict[str, Tensor] = {}
    for name in methods:
        if name == "grad_cam":
            assert cam_up is not None
            results[name] = cam_up
        elif name == "guided_backprop":
            assert guided is not None
            results[name] = guided
        elif name == "guided_grad_cam":
            assert guided is not None and cam_up is not None
            results[name] = combine(guided, cam_up)
        elif name == "agreement":
            assert maps is not None
            results[name] = consistency(
                model, x, layer_module, agreement_config, target=maps.targets, maps=maps, create_graph=create_graph
            ).score
        elif name == "integrated_gradients":
            results[name] = IntegratedGradients(model).attribute(
                x if create_graph else x.detach(),
                targets if targets is not None else target,
                n_steps=ig_steps,
                internal_batch_size=ig_internal_batch_size,
                create_graph=create_graph,
            )
    return results


def _base_maps(
    model: nn.Module,
    x: Tensor,
    layer: nn.Module,
    target: Target,
    wanted: frozenset[str],
    *,
    per_time_step: bool,
    create_graph: bool,
) -> tuple[Tensor | None, Tensor | None, Tensor | None, FusedMaps | None]:
    """``(targets, Grad-CAM at the layer's resolution, Guided Backprop, fused maps)`` that ``wanted`` needs."""
    need_cam, need_guided = bool(wanted & _NEEDS_CAM), bool(wanted & _NEEDS_GUIDED)
    if need_cam and need_guided:
        maps = fused_step(model, x, layer, target, create_graph=create_graph)
        return maps.targets, maps.cam(per_time_step=per_time_step), maps.guided, maps
    if need_cam:
        cam_method = GradCAM(model, layer)
        with traced(model, x, layer=layer, guided=False) as trace:
            assert trace.logits is not None
            targets = resolve_targets(target, trace.logits)
            cam_method.layer_gradient(trace, targets, create_graph=create_graph)
            cam = cam_method.layer_map(trace, x, per_time_step=per_time_step)
        return targets, cam if create_graph else cam.detach(), None, None
    if need_guided:
        with traced(model, x, guided=True) as trace:
            assert trace.logits is not None
            targets = resolve_targets(target, trace.logits)
            (guided,) = GradCAM._gradients(target_scores(trace.logits, targets), [x], create_graph=create_graph)
        return targets, None, guided if create_graph else guided.detach(), None
    return None, None, None, None


def _check_methods(methods: Sequence[str]) -> frozenset[str]:
    if isinstance(methods, str):
        raise AttributionError(f"methods must be a sequence of names, e.g. ({methods!r},)")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise AttributionError(f"unknown method(s) {unknown}; expected any of {', '.join(METHODS)}")
    if not methods:
        raise AttributionError("methods is empty")
    return frozenset(methods)
