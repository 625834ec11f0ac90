"""One instrumented forward pass: the only place attribution code touches the caller's model.

Why a single place: hooks on someone else's model are the classic way attribution libraries
leak state (a hook left behind after an exception, a module swapped on a shared class, a
gradient cached on ``self`` that another thread overwrites). Here every module hook lives only
for the duration of one ``model(x)`` call and is removed in ``finally``, whatever happens; what
outlives the forward is the per-call :class:`Trace` and the *tensor* hooks it put on that call's
own autograd graph, and both live exactly as long as the :func:`traced` block that made them.

Why the tensor hooks must go when the block ends, not merely "die with the graph": a map built
with ``create_graph=True`` keeps the forward graph alive, and the caller differentiates a loss on
it afterwards (ATCON does). Had the guided-ReLU hooks stayed attached and switched on, that outer
backward would be clamped at every ReLU too, a gradient that is *not* the derivative of the loss
(it was, once: cosine 0.78 with the true gradient on tiny3d). And the hooks are bound methods of
the trace, which holds the activations: a reference cycle through C++ autograd nodes that
Python's garbage collector cannot see, so every explained batch would leak its graph. On exit
:meth:`Trace.close` removes every tensor hook and drops every tensor reference.

Two things are instrumented:

* the **target layer** (Grad-CAM's feature map): a forward hook records its output ``A`` and
  hands downstream a clone of it carrying a tensor hook, which records ``dS/dA`` during the
  backward pass. The clone makes the capture immune to downstream in-place ops (torchvision's
  ``out += identity``; an in-place ReLU right after the layer) and to the guided rule that a
  ReLU *inside* the layer registers on the very same tensor.
* every **nn.ReLU (and nn.ReLU6) module**, for Guided Backpropagation (Springenberg et al., "Striving for
  Simplicity", ICLR-W 2015): a forward hook puts a tensor hook on each ReLU output that clamps
  the incoming gradient at zero; ReLU's own backward then masks by ``input > 0``, which together
  is the guided rule ``R_in = [x > 0] * max(R_out, 0)``. Being per *call*, this handles one
  module used twice (torchvision's ``BasicBlock.relu``) and in-place ReLUs, needs no
  ``register_full_backward_hook`` (which refuses in-place outputs) and never the deprecated
  ``register_backward_hook``. Done with differentiable ops, so ``create_graph=True`` works.

ReLUs called as functions (``F.relu``, ``torch.relu``, ``x.relu()``) cannot be hooked that way
and would silently keep their plain gradient. During a guided forward a ``TorchFunctionMode``
(thread-local, active only inside the call) watches for them and raises
:class:`FunctionalReLUError` naming the module that made the call.

Every hook checks the calling thread, so even a model shared between threads (in eval mode) is
only affected by the thread that is explaining it.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from model.attribution.errors import AttributionError, FunctionalReLUError

__all__ = ["Trace", "live_traces", "traced"]

# Rectifier modules that get the guided rule. ReLU6 qualifies: its backward masks by
# 0 < x < 6, so clamping the incoming gradient gives the same guided rule (MobileNets use it).
_GUIDED_MODULES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)

# Functional spellings of ReLU that Guided Backprop must see as modules.
_FUNCTIONAL_RELUS: frozenset[Callable[..., object]] = frozenset(
    {F.relu, F.relu_, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_, F.relu6}
)


@dataclass(eq=False)
class Trace:
    """What one instrumented forward pass leaves for the backward pass.

    Attributes:
        logits: model output ``[N, K]`` (a ``[N]`` output is viewed as ``[N, 1]``).
        activations: the target layer's output ``A`` as the layer produced it (``None`` when no
            layer was hooked), e.g. ``[N, K, h, w]``, ``[N*T, K, h, w]`` or ``[N, K, t, h, w]``.
        layer_grad: ``dS/dA`` (same shape as ``activations``), filled in by the backward pass
            while ``capture`` is true.
        relus_after_layer: names of ``nn.ReLU`` modules that ran after the target layer; if any,
            guided gradients at the layer differ from plain ones (see :mod:`.explain`).
        guided: switch read by the guided-ReLU tensor hooks during backward; turning it off
            gives plain gradients from the same graph.
        capture: switch read by the layer's gradient hook.
    """

    logits: Tensor | None = None
    activations: Tensor | None = None
    layer_grad: Tensor | None = None
    relus_after_layer: list[str] = field(default_factory=list)
    guided: bool = True
    capture: bool = True
    # --- bookkeeping during the forward pass ---
    _thread: int = field(default_factory=threading.get_ident)
    _layer_calls: int = 0
    _relu_depth: int = 0
    _tensor_hooks: list[RemovableHandle] = field(default_factory=list)
    closed: bool = False

    def __post_init__(self) -> None:
        _LIVE.add(self)

    def _mine(self) -> bool:
        return threading.get_ident() == self._thread

    def _hook_tensor(self, tensor: Tensor, hook: Callable[[Tensor], Tensor | None]) -> None:
        self._tensor_hooks.append(tensor.register_hook(hook))

    def close(self) -> None:
        """Remove every tensor hook from the graph and drop every tensor this trace holds.

        After this, a backward pass through the graph (a loss on a map built with
        ``create_graph=True``) is the ordinary derivative: no guided rule, no capture.
        """
        self.guided = self.capture = False
        for handle in self._tensor_hooks:
            handle.remove()
        self._tensor_hooks.clear()
        self.logits = self.activations = self.layer_grad = None
        self.closed = True

    # Tensor hooks (run during backward) -----------------------------------------------------
    def _guided_rule(self, grad: Tensor) -> Tensor | None:
        # Guided Backprop: only positive gradient signal passes a ReLU (its backward then also
        # masks by the forward input's sign).
        # relu, not clamp(min=0): the same values, and its derivative (needed when the map is differentiated)
        # is one fused threshold op where clamp's is a comparison plus a 10x slower `where` on CPU.
        return torch.relu(grad) if self.guided else None

    def _record_layer_grad(self, grad: Tensor) -> None:
        if self.capture:
            self.layer_grad = grad

    # Module hooks (run during forward) ------------------------------------------------------
    def _layer_hook(self, module: nn.Module, args: tuple[object, ...], output: object) -> Tensor | None:
        if not self._mine():
            return None
        self._layer_calls += 1
        if self._layer_calls > 1:
            return None  # reported after the forward (see _traced_forward)
        if not isinstance(output, Tensor):
            raise AttributionError(
                f"the target layer {type(module).__name__} returned {type(output).__name__}, "
                "not a tensor; choose a module whose output is a single feature map"
            )
        self.activations = output
        if not output.requires_grad:
            return None
        passthrough = output.clone()
        self._hook_tensor(passthrough, self._record_layer_grad)
        return passthrough

    def _relu_pre_hook(self, module: nn.Module, args: tuple[object, ...]) -> None:
        if self._mine():
            self._relu_depth += 1

    def _relu_hook(self, name: str, module: nn.Module, args: tuple[object, ...], output: object) -> None:
        if not self._mine():
            return
        self._relu_depth -= 1  # only read by the functional-ReLU watch (which also installs the pre-hook)
        if isinstance(output, Tensor) and output.requires_grad:
            self._hook_tensor(output, self._guided_rule)
        if self.activations is not None:
            self.relus_after_layer.append(name)


class _FunctionalReLUWatch(TorchFunctionMode):
    """Refuse ReLUs called as functions outside an ``nn.ReLU`` module (guided pass only).

    Torch-function modes are thread-local, so this sees only the explaining thread's calls.
    """

    def __init__(self, trace: Trace, model: nn.Module) -> None:
        super().__init__()
        self._trace = trace
        self._model = model

    def __torch_function__(self, func, types, args=(), kwargs=None):  # torch protocol; untyped
        kwargs = kwargs or {}
        if self._trace._relu_depth == 0 and _is_functional_relu(func):
            arg = args[0] if args else kwargs.get("input")
            if isinstance(arg, Tensor) and arg.requires_grad:
                raise FunctionalReLUError(
                    f"the model calls {_func_name(func)} outside an nn.ReLU module"
                    f"{_calling_module(self._model)}; Guided Backprop can only apply its rule to "
                    "nn.ReLU modules and would silently return plain gradients there. Replace the "
                    "call by an nn.ReLU module (e.g. self.relu = nn.ReLU() in __init__)."
                )
        return func(*args, **kwargs)


def _is_functional_relu(func: object) -> bool:
    try:
        return func in _FUNCTIONAL_RELUS
    except TypeError:  # an unhashable callable cannot be one of ours
        return False


def _func_name(func: object) -> str:
    if func is Tensor.relu or func is Tensor.relu_:
        return f"Tensor.{func.__name__}()"  # type: ignore[attr-defined]
    module = getattr(func, "__module__", None) or "torch"
    return f"{module}.{getattr(func, '__name__', repr(func))}"


def _calling_module(model: nn.Module) -> str:
    """`` (in module 'layer1.0')`` for the innermost module of ``model`` on the Python stack.

    Only runs on the error path, so walking frames costs nothing in normal use.
    """
    names = {id(m): name for name, m in model.named_modules()}
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in names:
            name = names[id(owner)] or "<root>"
            return f" (in module {name!r}, {type(owner).__name__})"
        frame = frame.f_back
    return ""


def _traced_forward(
    model: nn.Module,
    inputs: Tensor,
    *,
    layer: nn.Module | None = None,
    guided: bool = False,
    watch_functional_relu: bool = True,
) -> Trace:
    """Run ``model(inputs)`` once with the requested instrumentation and return its :class:`Trace`.

    Args:
        model: any ``nn.Module`` returning logits ``[N, K]``.
        inputs: ``[N, C, H, W]`` or ``[N, C, T, H, W]``, already requiring grad.
        layer: a submodule whose output to record (and whose gradient to capture), or ``None``.
        guided: install the Guided Backprop rule on every ``nn.ReLU`` call and refuse
            functional ReLUs.
        watch_functional_relu: with ``guided``, watch every op for a functional ReLU (the
            default). A caller that explains the same model over and over (the ATCON trainer)
            may check once and then switch it off: the watch dispatches every tensor op through
            Python, ~10% of a small network's training step.

    Module hooks exist only while this function runs; they are removed in ``finally`` also when
    the forward raises. The caller runs the backward pass (``torch.autograd.grad``) afterwards,
    inside :func:`traced`, which owns the tensor hooks' lifetime.
    """
    trace = Trace(guided=guided)
    try:
        _instrumented_call(trace, model, inputs, layer=layer, watch=guided and watch_functional_relu)
        trace.logits = _check_logits(trace.logits, inputs.shape[0])
        _check_layer_calls(trace, layer)
    except BaseException:
        trace.close()  # hooks a failed forward put on its graph go with it
        raise
    return trace


def _instrumented_call(trace: Trace, model: nn.Module, inputs: Tensor, *, layer: nn.Module | None, watch: bool) -> None:
    """``model(inputs)`` with the trace's module hooks, which are removed in ``finally``."""
    handles: list[RemovableHandle] = []
    try:
        if trace.guided:
            # Registered before the layer hook: a ReLU that *is* the last op of the layer then
            # counts as inside the layer, not after it.
            for name, module in model.named_modules():
                if isinstance(module, _GUIDED_MODULES):
                    if watch:  # the depth counter only serves the functional-ReLU watch
                        handles.append(module.register_forward_pre_hook(trace._relu_pre_hook))
                    handles.append(module.register_forward_hook(_bind_name(trace._relu_hook, name)))
        if layer is not None:
            handles.append(layer.register_forward_hook(trace._layer_hook))
        with torch.inference_mode(False), torch.enable_grad():
            if watch:
                with _FunctionalReLUWatch(trace, model):
                    trace.logits = model(inputs)
            else:
                trace.logits = model(inputs)
    finally:
        for handle in handles:
            handle.remove()


def _check_layer_calls(trace: Trace, layer: nn.Module | None) -> None:
    if layer is None:
        return
    if trace._layer_calls == 0:
        raise AttributionError(f"the target layer {type(layer).__name__} did not run during the forward pass")
    if trace._layer_calls > 1:
        raise AttributionError(
            f"the target layer {type(layer).__name__} ran {trace._layer_calls} times in one "
            "forward pass (a shared module such as a ResNet block's relu); choose a module that "
            "runs once, e.g. the whole block"
        )


def _bind_name(hook: Callable[..., None], name: str) -> Callable[..., None]:
    def bound(module: nn.Module, args: tuple[object, ...], output: object) -> None:
        hook(name, module, args, output)

    return bound


def _check_logits(output: object, n: int) -> Tensor:
    if not isinstance(output, Tensor):
        raise AttributionError(f"the model must return a logits tensor [N, K], got {type(output).__name__}")
    if output.dim() == 1:
        output = output[:, None]
    if output.dim() != 2 or output.shape[0] != n:
        raise AttributionError(f"the model must return logits [N={n}, K], got shape {tuple(output.shape)}")
    return output


# Traces not yet closed (weak: a trace that was dropped without closing still shows up as long as a
# leaked graph keeps it alive, which is exactly what a leak test needs to see).
_LIVE: weakref.WeakSet[Trace] = weakref.WeakSet()


def live_traces() -> list[Trace]:
    """Traces whose :func:`traced` block has not ended (for leak tests and debugging)."""
    return [t for t in list(_LIVE) if not t.closed]


@contextmanager
def traced(
    model: nn.Module,
    inputs: Tensor,
    *,
    layer: nn.Module | None = None,
    guided: bool = False,
    watch_functional_relu: bool = True,
) -> Iterator[Trace]:
    """One instrumented forward pass of ``model`` on ``inputs``; the backward passes happen inside.

    ``with traced(model, x, layer=layer, guided=True) as trace:`` runs the forward (arguments as
    in :func:`_traced_forward`), yields its :class:`Trace` for the caller's
    ``torch.autograd.grad`` calls, and on exit, also on an exception, closes it
    (:meth:`Trace.close`): tensor hooks removed, guided rule and capture off, tensors dropped.
    Maps computed inside the block keep their own autograd graph, so a map built with
    ``create_graph=True`` stays differentiable after the block, and its derivative is the true one.
    """
    trace = _traced_forward(model, inputs, layer=layer, guided=guided, watch_functional_relu=watch_functional_relu)
    try:
        yield trace
    finally:
        trace.close()
