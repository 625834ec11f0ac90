"""Benchmark: the fused ``explain()`` against separate calls and a plain forward+backward.

For each network (random weights, fixed seed, CPU) it times, on the same inputs:

* ``fwd+bwd``: one plain forward pass and one backward pass to the input (a saliency map), the
  floor for any gradient explanation;
* ``explain``: ``explain(model, x, layer=...)`` -> Grad-CAM, Guided Backprop, Guided Grad-CAM;
* ``separate``: ``GradCAM(...).attribute``, ``GuidedBackprop(...).attribute`` and
  ``GuidedGradCAM(...).attribute``, three calls (each is as fast as it can be on its own).

and prints the ratios ``explain / fwd+bwd`` (target <= 1.3) and ``separate / explain`` (target
>= 1.8). The three measurements are interleaved per repeat so load from other processes on a
shared machine hits them alike; the median over repeats is reported.

Run: ``python benchmarks/attribution.py [--repeats 3] [--models resnet18 r3d_18]``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.attribution import GradCAM, GuidedBackprop, GuidedGradCAM, explain  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], nn.Module]
    shape: tuple[int, ...]


def _resnet18() -> nn.Module:
    from torchvision.models import resnet18

    return resnet18(weights=None)


def _r3d_18() -> nn.Module:
    from torchvision.models.video import r3d_18

    return r3d_18(weights=None)


CASES = {
    "resnet18": Case("resnet18", _resnet18, (8, 3, 224, 224)),
    "r3d_18": Case("r3d_18", _r3d_18, (2, 3, 16, 112, 112)),
}


class _FallbackSpy(logging.Handler):
    """Notices the engine's log line when the fused pass has to fall back."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.fell_back = False

    def emit(self, record: logging.LogRecord) -> None:
        if "falling back" in record.getMessage():
            self.fell_back = True


def _plain_forward_backward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    inputs = x.detach().requires_grad_(True)
    logits = model(inputs)
    score = logits.gather(1, logits.detach().argmax(1, keepdim=True)).sum()
    (grad,) = torch.autograd.grad(score, inputs)
    return grad


def _separate(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> None:
    GradCAM(model, layer).attribute(x)
    GuidedBackprop(model).attribute(x)
    GuidedGradCAM(model, layer).attribute(x)


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_case(case: Case, *, repeats: int, warmup: int) -> dict[str, float | bool | str]:
    torch.manual_seed(0)
    model = case.build().eval()
    layer = model.layer4[-1]  # type: ignore[index]
    x = torch.randn(*case.shape)
    spy = _FallbackSpy()
    logging.getLogger("model.attribution").addHandler(spy)
    logging.getLogger("model.attribution").setLevel(logging.INFO)
    jobs: dict[str, Callable[[], object]] = {
        "fwd+bwd": lambda: _plain_forward_backward(model, x),
        "explain": lambda: explain(model, x, layer=layer),
        "separate": lambda: _separate(model, layer, x),
    }
    try:
        for _ in range(warmup):
            for job in jobs.values():
                job()
        times: dict[str, list[float]] = {k: [] for k in jobs}
        for _ in range(repeats):
            for key, job in jobs.items():
                times[key].append(_time(job))
    finally:
        logging.getLogger("model.attribution").removeHandler(spy)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "model": case.name,
        "input": "x".join(str(s) for s in case.shape),
        **med,
        "explain/fwd+bwd": med["explain"] / med["fwd+bwd"],
        "separate/explain": med["separate"] / med["explain"],
        "fused": not spy.fell_back,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)

    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, median of {args.repeats}")
    header = (
        f"| {'model':9} | {'input':14} | {'fwd+bwd s':>9} | {'explain s':>9} | {'separate s':>10} "
        f"| {'explain/fwd+bwd':>15} | {'separate/explain':>16} | fused |"
    )
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    rows = []
    for name in args.models:
        row = run_case(CASES[name], repeats=args.repeats, warmup=args.warmup)
        rows.append(row)
        print(
            f"| {row['model']:9} | {row['input']:14} | {row['fwd+bwd']:9.3f} | {row['explain']:9.3f} "
            f"| {row['separate']:10.3f} | {row['explain/fwd+bwd']:15.2f} | {row['separate/explain']:16.2f} "
            f"| {'yes' if row['fused'] else 'no':5} |",
            flush=True,
        )
    ok = all(r["explain/fwd+bwd"] <= 1.3 and r["separate/explain"] >= 1.8 for r in rows)
    print(f"targets (explain <= 1.3x fwd+bwd, >= 1.8x faster than separate): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
