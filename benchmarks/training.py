"""Cost of one ATCON step against one supervised step on the same batch (CPU).

Usage::

    .venv/bin/python benchmarks/training.py [--repeats 5] [--threads 2] [--json out.json]

For each architecture (tiny2d on 32x32 images, resnet18 on 112x112 images, r3d_18 on 8x112x112
clips) it times, after a warm-up, the median of ``--repeats`` runs of

* a supervised step: train-mode forward, cross-entropy, backward, Adam step;
* an ATCON step (default ``mask`` configuration): the loss (Grad-CAM + Guided Backprop of the
  input sharing one pass, the soft mask, Grad-CAM of the masked input, all with
  ``create_graph=True``), the second-order backward and an Adam step;

and prints the ratio. Target (issue 9): <= 3x a supervised step on resnet18 and r3d_18 with the true
gradient. Counted in convolutions, the ATCON step is 2 forward passes, a guided input-gradient pass,
two full backward passes and the double backward of the guided pass, about 3x the convolutions of a
supervised step: the target is the method's floor, reachable only when every convolution runs on the
efficient first-order kernels and the element-wise work is small. Hence frozen BatchNorms folded into
their convolutions once per loss (``model/training/batchnorm_folding.py``) and convolutions whose double
backward is two first-order kernels computing only what is used (``model/training/second_order_conv.py``).

``--double-backward`` times that last piece alone on each stage's convolution shape: PyTorch's generic
double backward against ours, both giving ``d/dgO`` and ``d/dW`` of a convolution's input gradient.
``--per-sample`` also times a per-sample Python loop for comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from model.nets import build_model
from model.training.atcon import ATCONConfig, ATCONLoss

CASES: dict[str, tuple[int, ...]] = {
    "tiny2d": (32, 3, 32, 32),
    "resnet18": (8, 3, 112, 112),
    "r3d_18": (2, 3, 8, 112, 112),
}


def _seconds(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _interleaved(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Minimum seconds per function over ``repeats`` rounds, the functions alternating.

    The machine is shared: alternating the contenders exposes them to the same background load,
    and the minimum is the least disturbed run (the median is also logged in the JSON).
    """
    for fn in fns.values():
        fn()  # warm-up (allocator, kernels)
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            runs[name].append(_seconds(fn))
    out = {f"{name}_s": min(v) for name, v in runs.items()}
    out.update({f"{name}_median_s": statistics.median(v) for name, v in runs.items()})
    return out


def bench(arch: str, shape: tuple[int, ...], *, repeats: int, per_sample: bool) -> dict[str, float]:
    """Seconds per supervised / ATCON step (and the ratio) for ``arch`` on a random batch."""
    torch.manual_seed(0)
    k = 5
    model = build_model(arch, num_classes=k)
    model.train()
    x = torch.randn(*shape)
    y = torch.randint(0, k, (shape[0],))
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=1e-6)
    criterion = nn.CrossEntropyLoss()
    atcon = ATCONLoss(model, config=ATCONConfig())

    def supervised() -> None:
        opt.zero_grad(set_to_none=True)
        criterion(model(x), y).backward()
        opt.step()

    def unsupervised() -> None:
        opt.zero_grad(set_to_none=True)
        atcon(x).loss.backward(inputs=params)  # as the trainer does: weight gradients only
        opt.step()

    def looped() -> None:
        opt.zero_grad(set_to_none=True)
        for i in range(x.shape[0]):
            (atcon(x[i : i + 1]).loss / x.shape[0]).backward(inputs=params)
        opt.step()

    fns: dict[str, Callable[[], None]] = {"supervised": supervised, "atcon": unsupervised}
    if per_sample:
        fns["per_sample"] = looped
    out = _interleaved(fns, repeats)
    out["ratio"] = out["atcon_s"] / out["supervised_s"]
    if per_sample:
        out["per_sample_ratio"] = out["per_sample_s"] / out["supervised_s"]
    return out


# (C_in, C_out, input spatial size) of each stage's 3x3(x3) convolution at the CASES' inputs
STAGES: dict[str, list[tuple[int, int, tuple[int, ...]]]] = {
    "resnet18": [(64, 64, (28, 28)), (128, 128, (14, 14)), (256, 256, (7, 7)), (512, 512, (4, 4))],
    "r3d_18": [(64, 64, (8, 56, 56)), (128, 128, (4, 28, 28)), (256, 256, (2, 14, 14)), (512, 512, (1, 7, 7))],
}


def _double_backward(conv: nn.Module, x: torch.Tensor, *, ours: bool) -> Callable[[], None]:
    """A function running the double backward (to ``gO`` and ``W``) of ``conv``'s input gradient at ``x``."""
    from model.training.second_order_conv import conv_forward

    y = conv_forward(conv, x, conv.weight, None) if ours else conv(x)
    grad_out = torch.randn_like(y, requires_grad=True)
    (grad_in,) = torch.autograd.grad(y, x, grad_out, create_graph=True)
    probe = torch.randn_like(grad_in)

    def run() -> None:
        torch.autograd.grad(grad_in, [grad_out, conv.weight], probe, retain_graph=True)

    return run


def bench_double_backward(arch: str, *, repeats: int) -> list[dict[str, float | str]]:
    """Seconds of the double backward of one convolution per stage: PyTorch's formula vs ours."""
    batch = CASES[arch][0]
    rows: list[dict[str, float | str]] = []
    for c_in, c_out, size in STAGES[arch]:
        conv = (nn.Conv2d if len(size) == 2 else nn.Conv3d)(c_in, c_out, 3, padding=1, bias=False)
        x = torch.randn(batch, c_in, *size, requires_grad=True)
        fns = {"pytorch": _double_backward(conv, x, ours=False), "ours": _double_backward(conv, x, ours=True)}
        out = _interleaved(fns, repeats)
        shape = f"{c_in}->{c_out} @{'x'.join(map(str, size))}"
        rows.append({"shape": shape, **out, "speedup": out["pytorch_s"] / out["ours_s"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--arch", nargs="*", default=list(CASES))
    parser.add_argument("--per-sample", action="store_true", help="also time a per-sample loop")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    parser.add_argument("--double-backward", action="store_true", help="time a convolution's double backward only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {}
    if args.double_backward:
        print(f"{'arch':10s} {'stage conv':>24s} {'PyTorch':>9s} {'ours':>9s} {'speed-up':>8s}")
        for arch in (a for a in args.arch if a in STAGES):
            results[arch] = bench_double_backward(arch, repeats=args.repeats)
            for r in results[arch]:
                print(f"{arch:10s} {r['shape']:>24s} {r['pytorch_s'] * 1e3:7.1f}ms {r['ours_s'] * 1e3:7.1f}ms "
                      f"{r['speedup']:7.2f}x")
        _write(args.json, results)
        return 0
    print(f"{'arch':10s} {'batch':>18s} {'supervised':>11s} {'ATCON':>9s} {'ratio':>6s}")
    for arch in args.arch:
        shape = CASES[arch]
        r = bench(arch, shape, repeats=args.repeats, per_sample=args.per_sample)
        results[arch] = {"shape": list(shape), **r}
        extra = f"  per-sample loop {r['per_sample_ratio']:.1f}x" if "per_sample_ratio" in r else ""
        print(
            f"{arch:10s} {'x'.join(map(str, shape)):>18s} {r['supervised_s'] * 1e3:9.1f}ms "
            f"{r['atcon_s'] * 1e3:7.1f}ms {r['ratio']:5.2f}x{extra}"
        )
    _write(args.json, results)
    return 0


def _write(path: str | None, results: dict) -> None:
    if path:
        with open(path, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    raise SystemExit(main())
