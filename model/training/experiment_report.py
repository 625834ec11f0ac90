"""Reporting for the ATCON experiment: per-N summaries, the Markdown table and the plot.

Numbers in, text and PNG out. The JSON written by :mod:`model.training.experiment` holds
everything the table and plot show (values in [0, 1]; the table prints points, x100).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from model.training.bootstrap import (
    paired_bootstrap_macro_f1,
    paired_bootstrap_mean,
    paired_cluster_bootstrap_macro_f1,
)
from model.training.metrics import class_targets
from model.training.training_data import TrainingData

__all__ = ["jsonable", "markdown_table", "paired_f1", "plot", "summarise"]


def paired_f1(
    probs_a: list[np.ndarray], probs_b: list[np.ndarray], test: TrainingData, *, bootstrap: int, seed: int = 0
) -> dict[str, Any]:
    """The paired macro-F1 bootstraps of B - A on ``test``: the item-level ones (``low``/``high``,
    ``seeds_*``) and, as ``cluster_*``, seeds crossed with test videos (``test.groups``), the
    headline interval, since clips of one video are not independent evidence."""
    targets = class_targets(test.labels, multi_label=test.multi_label)
    out: dict[str, Any] = paired_bootstrap_macro_f1(
        probs_a, probs_b, targets, multi_label=test.multi_label, runs=bootstrap, seed=seed
    )
    cluster = paired_cluster_bootstrap_macro_f1(
        probs_a, probs_b, targets, test.groups, multi_label=test.multi_label, runs=bootstrap, seed=seed
    )
    out.update(
        cluster_low=cluster["low"],
        cluster_high=cluster["high"],
        cluster_p_le_zero=cluster["p_le_zero"],
        clusters=cluster["groups"],
    )
    return out


def summarise(rows: list[dict[str, Any]], test: TrainingData, *, bootstrap: int = 1000) -> dict[str, Any]:
    """Per-N summary over seeds: means, the seed-averaged paired bootstraps (ATCON vs baseline,
    vs control; mIoU and pointing game where regions exist) and how often ATCON kept its start."""

    def vals(model: str, key: str) -> list[float]:
        return [float(r[model][key]) for r in rows if model in r and r[model].get(key) is not None]

    summary: dict[str, Any] = {}
    for model in ("baseline", "atcon", "control"):
        f1 = vals(model, "macro_f1")
        if not f1:
            continue
        entry = {
            "macro_f1_mean": float(np.mean(f1)),
            "macro_f1_std": float(np.std(f1)),
            "map_mean": float(np.mean(vals(model, "map"))),
        }
        for key in ("miou", "pointing_game", "average_drop_100", "increase_in_confidence_100"):
            v = [x for x in vals(model, key) if not math.isnan(x)]
            if v:
                entry[f"{key}_mean"] = float(np.mean(v))
        summary[model] = entry
    arrays = [r["_arrays"] for r in rows]
    summary["paired_f1"] = paired_f1(
        [a["baseline"]["probs"] for a in arrays], [a["atcon"]["probs"] for a in arrays], test, bootstrap=bootstrap
    )
    diffs = [r["paired_f1"]["diff"] for r in rows]
    summary["paired_f1"]["per_seed"] = diffs
    summary["paired_f1"]["seeds_positive"] = int(sum(d > 0 for d in diffs))
    summary["atcon_selected_start"] = int(sum(r["atcon"]["best_epoch"] == -1 for r in rows))
    if all("control" in a for a in arrays):
        summary["paired_f1_vs_control"] = paired_f1(
            [a["control"]["probs"] for a in arrays], [a["atcon"]["probs"] for a in arrays], test, bootstrap=bootstrap
        )
    if all("iou" in a["baseline"] for a in arrays):
        summary["paired_miou"] = paired_bootstrap_mean(
            [a["baseline"]["iou"] for a in arrays], [a["atcon"]["iou"] for a in arrays], runs=bootstrap
        )
        summary["paired_pointing"] = paired_bootstrap_mean(
            [a["baseline"]["pointing"] for a in arrays], [a["atcon"]["pointing"] for a in arrays], runs=bootstrap
        )
    return summary


def _pct(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _signed(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:+.1f}"


def markdown_table(results: dict[str, Any]) -> str:
    """The results as a Markdown table (macro-F1 and localisation in points, i.e. x100)."""
    cfg = results["config"]
    has_loc = any("paired_miou" in r["summary"] for r in results["runs"])
    has_ctl = any("control" in r["summary"] for r in results["runs"])
    head = ["N / class", "seeds", "baseline F1", "ATCON F1", "Δ F1 [CI seeds × videos]", "[CI items]"]
    head += ["[CI seeds × items]", "seeds Δ>0"]
    if has_ctl:
        head += ["control F1", "Δ vs control [CI seeds × videos]"]
    if has_loc:
        head += ["mIoU base → ATCON", "Δ mIoU [CI]", "pointing base → ATCON", "Δ pointing [CI]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in results["runs"]:
        s = run["summary"]
        cells = [str(run["images_per_class"]), str(len(run["seeds"])), *_f1_cells(s, len(run["seeds"]))]
        if has_ctl:
            c = s.get("paired_f1_vs_control", {})
            cells += [
                f"{_pct(s.get('control', {}).get('macro_f1_mean'))}",
                f"{_signed(c.get('diff'))} [{_signed(c.get('cluster_low'))}, {_signed(c.get('cluster_high'))}]",
            ]
        if has_loc:
            m, q = s.get("paired_miou", {}), s.get("paired_pointing", {})
            cells += [
                f"{_pct(m.get('a'))} → {_pct(m.get('b'))}",
                f"{_signed(m.get('diff'))} [{_signed(m.get('seeds_low'))}, {_signed(m.get('seeds_high'))}]",
                f"{_pct(q.get('a'))} → {_pct(q.get('b'))}",
                f"{_signed(q.get('diff'))} [{_signed(q.get('seeds_low'))}, {_signed(q.get('seeds_high'))}]",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    split = "validation" if results.get("evaluated_on") == "validation" else "test"
    note = (
        f"\nScored on the **{split}** split. {cfg['arch']} on `{cfg['data']}`; "
        f"baseline {cfg['epochs']} epochs at lr {cfg['lr']:g}, ATCON "
        f"{cfg['mode']} {cfg['finetune_epochs']} epochs at lr {cfg['finetune_lr']:g}, alpha {cfg['alpha']:g}"
        + (f", lambda {cfg['atcon_weight']:g}" if cfg["mode"] == "combined" else "")
        + _non_default_options(cfg)
        + f". Values are points (x100), mean ± std over seeds. 95% CIs of the paired difference "
        f"({cfg['bootstrap']} bootstrap resamples): 'seeds × videos' (the headline) resamples the {split} videos "
        "(recordings; single items when the data has none) and, independently, the training seeds, because "
        f"clips of one video are not independent evidence; 'items' resamples the {split} clips with the seeds "
        "fixed; 'seeds × items' resamples the seeds and the clips, so one lucky seed cannot carry it "
        "(mIoU and pointing columns show the seeds × items interval).\n"
    )
    return "\n".join(lines) + "\n" + note


def _f1_cells(s: dict[str, Any], seeds: int) -> list[str]:
    """Baseline, ATCON, Δ with the seeds × videos CI, the item-level CIs and the seeds with Δ > 0."""
    p = s["paired_f1"]
    return [
        f"{_pct(s['baseline']['macro_f1_mean'])} ± {_pct(s['baseline']['macro_f1_std'])}",
        f"{_pct(s['atcon']['macro_f1_mean'])} ± {_pct(s['atcon']['macro_f1_std'])}",
        f"{_signed(p['diff'])} [{_signed(p.get('cluster_low'))}, {_signed(p.get('cluster_high'))}]",
        f"[{_signed(p['low'])}, {_signed(p['high'])}]",
        f"[{_signed(p.get('seeds_low'))}, {_signed(p.get('seeds_high'))}]",
        f"{p['seeds_positive']}/{seeds}",
    ]


# ATCON and schedule options the table's note names when they differ from the defaults.
_OPTION_DEFAULTS: dict[str, Any] = {
    "resolution_match": "mask",
    "similarity": "pearson",
    "fine_method": "guided_backprop",
    "mask_intensity": 8.0,
    "detach_mask": False,
    "ignore_background": False,
    "reflect_padding": False,
    "atcon_grad_clip": None,
    "freeze_bn": "finetune",
    "fully_balanced": False,
    "pretrained": None,
}


def _non_default_options(cfg: dict[str, Any]) -> str:
    changed = [f"{k}={cfg[k]}" for k, v in _OPTION_DEFAULTS.items() if k in cfg and cfg[k] != v]
    return f" ({', '.join(changed)})" if changed else ""


def plot(results: dict[str, Any], path: Path) -> Path:
    """PNG: macro-F1 (mean ± std over seeds) against labelled items per class, and beside it the
    paired differences (ATCON - baseline, ATCON - control) with their seeds × videos 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(results["runs"], key=lambda r: r["images_per_class"])
    xs = [r["images_per_class"] for r in runs]
    fig, (ax, dx) = plt.subplots(1, 2, figsize=(9.5, 3.8), dpi=120)
    for key, label, style in (
        ("baseline", "supervised baseline", "o-"),
        ("atcon", "ATCON", "s-"),
        ("control", "control (same labelled steps, no ATCON)", "^--"),
    ):
        if not all(key in r["summary"] for r in runs):
            continue
        ys = [100 * r["summary"][key]["macro_f1_mean"] for r in runs]
        es = [100 * r["summary"][key]["macro_f1_std"] for r in runs]
        ax.errorbar(xs, ys, yerr=es, fmt=style, capsize=3, label=label)
    ax.set_ylabel("test macro-F1 (points)")
    ax.set_title(f"{results['config']['arch']} on {results['data']['source']}: mean ± std over seeds", fontsize=9)
    ax.legend(fontsize=7)
    for key, label, style, shift in (
        ("paired_f1", "ATCON - baseline", "s-", 0.97),
        ("paired_f1_vs_control", "ATCON - control", "^--", 1.03),
    ):
        if not all(key in r["summary"] for r in runs):
            continue
        diffs = [100 * r["summary"][key]["diff"] for r in runs]
        low = [100 * _or_nan(_interval(r["summary"][key])[0]) for r in runs]
        high = [100 * _or_nan(_interval(r["summary"][key])[1]) for r in runs]
        err = [[d - lo for d, lo in zip(diffs, low, strict=True)], [hi - d for d, hi in zip(diffs, high, strict=True)]]
        dx.errorbar([x * shift for x in xs], diffs, yerr=err, fmt=style, capsize=3, label=label)
    dx.axhline(0.0, color="grey", lw=0.8)
    dx.set_ylabel("Δ macro-F1 (points)")
    dx.set_title("paired differences, 95% CI over seeds × test videos", fontsize=9)
    dx.legend(fontsize=7)
    for a in (ax, dx):
        a.set_xscale("log", base=2)
        a.set_xticks(xs, [str(x) for x in xs])
        a.set_xlabel("labelled items per class")
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _interval(p: dict[str, Any]) -> tuple[float | None, float | None]:
    """The headline (seeds × videos) interval; results written before it existed give seeds × items."""
    if "cluster_low" in p:
        return p.get("cluster_low"), p.get("cluster_high")
    return p.get("seeds_low"), p.get("seeds_high")


def _or_nan(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj
