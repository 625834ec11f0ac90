"""The ATCON experiment: supervised baseline vs ATCON fine-tuning on a small labelled set.

``wardwatch experiment atcon --data ... --arch ... --images-per-class N [N ...] --seeds K --out
results.json [--phase validation|test]`` (the server's CLI calls :func:`run_cli`). For every N and
seed (:func:`model.training.experiment_run.run_seed`):

1. the training split is divided into a small labelled set (``images_per_class`` = N, drawn with
   :func:`~model.training.schedule.select_labelled`, the seed's draw) and the unlabelled pool
   (everything else, labels dropped);
2. the **baseline** is trained on the labelled set only (supervised mode, best epoch by
   validation macro-F1);
3. **ATCON** fine-tunes a copy of the baseline's best weights (alternating mode by default; the
   starting weights compete for "best", so selection never prefers a worse validation score);
4. optionally a **control** fine-tunes the baseline with exactly ATCON's labelled steps but no
   unlabelled ones (``--control``): it separates ATCON's effect from that of simply training the
   baseline longer;
5. all models are scored on the same split: macro-F1 and mAP with bootstrap CIs, the paired ATCON -
   baseline difference (headline interval: seeds crossed with videos, :mod:`model.training.bootstrap`),
   and where the data has regions the localisation mIoU, pointing game and Average Drop /
   Increase in Confidence.

**Pre-registration.** ``--phase validation`` (the default) scores on the validation split: that
is where configurations are compared and chosen (its seeds are recorded in the work folder).
``--phase test`` first records the configuration, with the time, in the work folder's
``test-ledger.json`` (and a copy in ``OUT.registration.json``), then scores on the test split. A
later test run on the same splits with another configuration, whatever its ``--out``, is refused,
and so are test seeds that were used while choosing: the test split is looked at once (an
interrupted test run with the same configuration resumes).

Outputs: the JSON at ``--out`` (config, data, per-N per-seed results and summaries), a Markdown
table beside it (same stem, ``.md``) and, with several N, a PNG plot of macro-F1 against N.

Data specs: ``imagefolder:PATH``, ``voc:PATH``, ``csv:PATH[,frames=8,fps=4,width=64,height=48]``
(videos + annotation CSV; ``stride=`` seconds between clips) and ``synthetic[:KEY=VAL,...]``
(synthetic ward video; keys in :data:`SYNTHETIC_DEFAULTS`; ``pretrain=P`` first pretrains the
backbone on P event-free videos labelled with their distractors and caregiver visits).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from model.files import atomic_path
from model.nets import ARCHITECTURES, is_video_arch
from model.training.experiment_config import ExperimentConfig, build_parser, config_from_args
from model.training.experiment_data import SYNTHETIC_DEFAULTS, Splits, load_splits
from model.training.experiment_report import jsonable, markdown_table, plot, summarise
from model.training.experiment_run import evaluation_split, pretrained_backbone, run_seed
from model.training.loop import show_progress

__all__ = [
    "SYNTHETIC_DEFAULTS",
    "ExperimentConfig",
    "Splits",
    "build_parser",
    "load_splits",
    "run_cli",
    "run_experiment",
]

logger = logging.getLogger(__name__)


# Settings that do not change what a (N, seed) run computes: left out of its cache key, so a run
# can be extended (more seeds, another N) or re-reported without training anything again.
_NOT_IN_RUN_KEY = frozenset(
    {
        "images_per_class",
        "seeds",
        "first_seed",
        "out",
        "work_dir",
        "cache_baselines",
        "progress",
        "tensorboard_dir",
        "device",
        "threads",
    }
)
# 3: the one training loop (per-epoch seeded batches, one augmentation) and ATCON's true gradient;
# 2 had the item-counted step probability fixed, 1 the biased gradient: both stale.
_RUN_FORMAT = 3


def _run_key(config: ExperimentConfig, n: int, seed: int) -> str:
    fields = {k: v for k, v in asdict(config).items() if k not in _NOT_IN_RUN_KEY}
    blob = json.dumps({"config": fields, "n": n, "seed": seed, "format": _RUN_FORMAT}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load_run(path: Path) -> dict[str, Any] | None:
    """A finished (N, seed) row and its per-item arrays, or None when absent or unreadable."""
    arrays_path = path.with_suffix(".npz")
    if not (path.is_file() and arrays_path.is_file()):
        return None
    try:
        row = json.loads(path.read_text())
        with np.load(arrays_path) as npz:
            arrays: dict[str, dict[str, np.ndarray]] = {}
            for name in npz.files:
                model_name, _, key = name.partition("/")
                arrays.setdefault(model_name, {})[key] = npz[name]
    except (OSError, ValueError) as err:
        logger.warning("ignoring unreadable cached run %s: %s", path, err)
        return None
    row["_arrays"] = arrays
    return row


def _save_run(path: Path, row: dict[str, Any]) -> None:
    """Write the row (JSON) and its arrays (npz), each atomically: arrays first, so a row file
    never exists without its arrays."""
    flat = {f"{m}/{k}": v for m, d in row["_arrays"].items() for k, v in d.items()}
    with atomic_path(path.with_suffix(".npz"), suffix=".npz") as tmp:
        np.savez(tmp, **flat)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(jsonable(row)))


def _cached_run_seed(
    config: ExperimentConfig,
    splits: Splits,
    n: int,
    seed: int,
    work_dir: Path,
    backbone: dict[str, torch.Tensor] | None,
) -> dict[str, Any]:
    """:func:`run_seed`, kept in ``work_dir/runs`` so an interrupted experiment resumes where it
    stopped and more seeds extend a finished one (``--no-cache`` recomputes)."""
    path = work_dir / "runs" / f"{_run_key(config, n, seed)}.json"
    if config.cache_baselines:
        cached = _load_run(path)
        if cached is not None:
            logger.info("N=%d seed=%d: finished run from cache %s", n, seed, path)
            return cached
    row = run_seed(config, splits, n, seed, work_dir, backbone)
    if config.cache_baselines:
        _save_run(path, row)
    return row


def _data_key(config: ExperimentConfig) -> str:
    """Identity of the splits (hence of the test split) a configuration is scored on."""
    blob = [config.data, config.image_size, config.test_fraction, config.val_fraction]
    return hashlib.sha256(json.dumps(blob).encode()).hexdigest()[:16]


def _ledger(work_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The work folder's record of registered tests and of the seeds used while choosing."""
    path = work_dir / "test-ledger.json"
    return path, (json.loads(path.read_text()) if path.is_file() else {"tests": {}, "validation_seeds": {}})


def _write_ledger(path: Path, ledger: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(ledger, indent=2))


def _seeds(config: ExperimentConfig) -> list[int]:
    return list(range(config.first_seed, config.first_seed + config.seeds))


def _record_validation(config: ExperimentConfig, out: Path, work_dir: Path) -> None:
    """A validation run: its seeds are recorded (a test must not reuse them); a test's results are kept."""
    if out.is_file() and json.loads(out.read_text()).get("evaluated_on") == "test":
        raise ValueError(f"{out} holds test results; write validation results elsewhere")
    path, ledger = _ledger(work_dir)
    used = set(ledger["validation_seeds"].get(_data_key(config), [])) | set(_seeds(config))
    ledger["validation_seeds"][_data_key(config)] = sorted(used)
    _write_ledger(path, ledger)


def _register(config: ExperimentConfig, out: Path, work_dir: Path) -> None:
    """Before any test item is scored: record the configuration (and the time) in the work folder.

    The test split of a data set is scored once: a test run with another configuration on the same
    splits (whatever its ``--out``) is refused, and so are seeds that were used while choosing on
    validation in this work folder. The same registered configuration resumes. A copy of the
    registration is written beside ``out`` (``OUT.registration.json``).
    """
    wanted = jsonable({k: v for k, v in asdict(config).items() if k not in _NOT_IN_RUN_KEY or k in _REGISTERED})
    path, ledger = _ledger(work_dir)
    key = _data_key(config)
    earlier = ledger["tests"].get(key)
    if earlier is not None:
        if earlier["config"] != wanted:
            raise ValueError(
                f"the test split of {config.data} was registered for another configuration at "
                f"{earlier['registered_at']} ({earlier['out']}); the test split is scored once (choose on --phase "
                "validation)"
            )
        logger.info("test run resumes the configuration registered at %s", earlier["registered_at"])
        return
    reused = sorted(set(_seeds(config)) & set(ledger["validation_seeds"].get(key, [])))
    if reused:
        raise ValueError(f"seeds {reused} were used while choosing on validation; test with fresh seeds (--first-seed)")
    entry = {"registered_at": dt.datetime.now(dt.UTC).isoformat(), "out": str(out), "config": wanted}
    ledger["tests"][key] = entry
    _write_ledger(path, ledger)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out.with_suffix(".registration.json")) as tmp:
        tmp.write_text(json.dumps(entry, indent=2))
    logger.info("registered the test configuration in %s", path)


_REGISTERED = ("seeds", "first_seed", "images_per_class")


def _run_all(config: ExperimentConfig, splits: Splits, work_dir: Path) -> list[dict[str, Any]]:
    backbone = pretrained_backbone(config, splits, work_dir)
    seeds = range(config.first_seed, config.first_seed + config.seeds)
    runs = []
    bar = tqdm(
        total=len(config.images_per_class) * len(seeds),
        desc="experiment runs (N, seed)",
        disable=not show_progress(config.progress),
    )
    try:
        for n in config.images_per_class:
            rows = []
            for seed in seeds:
                bar.set_postfix(n=n, seed=seed)
                rows.append(_cached_run_seed(config, splits, n, seed, work_dir, backbone))
                bar.update()
            summary = summarise(rows, evaluation_split(config, splits), bootstrap=config.bootstrap)
            runs.append({"images_per_class": n, "seeds": rows, "summary": summary})
    finally:
        bar.close()
    return runs


def run_experiment(config: ExperimentConfig) -> dict[str, Any]:
    """Run every N and seed, write JSON / Markdown / PNG, and return the results dict."""
    if config.arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {config.arch!r}")
    t_start = time.perf_counter()
    out = Path(config.out)
    work_dir = Path(config.work_dir) if config.work_dir else out.parent / f".{out.stem}-work"
    work_dir.mkdir(parents=True, exist_ok=True)
    splits = load_splits(
        config.data,
        work_dir,
        image_size=config.image_size,
        test_fraction=config.test_fraction,
        val_fraction=config.val_fraction,
    )
    if splits.train.frame_shape[0] == 1 and is_video_arch(config.arch):
        logger.warning("%s on single images: a 3D net sees one frame per item", config.arch)
    logger.info("data: %s", json.dumps(splits.description))
    if config.phase == "test":
        _register(config, out, work_dir)
    else:
        _record_validation(config, out, work_dir)
    results = {
        "config": asdict(config),
        "data": splits.description,
        "evaluated_on": config.phase,
        "runs": _run_all(config, splits, work_dir),
        "seconds": time.perf_counter() - t_start,
        "torch_threads": torch.get_num_threads(),
    }
    clean = jsonable(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(clean, indent=2))
    out.with_suffix(".md").write_text(markdown_table(clean))
    if len(config.images_per_class) > 1:
        plot(clean, out.with_suffix(".png"))
    logger.info("experiment done in %.1fs: %s", results["seconds"], out)
    return clean


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``wardwatch experiment atcon``; returns the process exit code."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        results = run_experiment(config_from_args(args))
    except (ValueError, FileNotFoundError) as err:
        logger.error("experiment failed: %s", err)
        return 2
    for run in results["runs"]:
        p = run["summary"]["paired_f1"]
        logger.info(
            "N=%d: baseline %.1f, ATCON %.1f, diff %+.1f macro-F1 points, 95%% CI [%+.1f, %+.1f] over seeds "
            "and %d test videos ([%+.1f, %+.1f] over test items, [%+.1f, %+.1f] over seeds and items)",
            run["images_per_class"],
            100 * run["summary"]["baseline"]["macro_f1_mean"],
            100 * run["summary"]["atcon"]["macro_f1_mean"],
            100 * p["diff"],
            *(100 * _nan(p.get(key)) for key in ("cluster_low", "cluster_high")),
            p.get("clusters", 0),
            100 * p["low"],
            100 * p["high"],
            *(100 * _nan(p.get(key)) for key in ("seeds_low", "seeds_high")),
        )
    return 0


def _nan(v: float | None) -> float:
    """JSON null (NaN written by :func:`jsonable`) back to NaN for printing."""
    return float("nan") if v is None else float(v)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(run_cli())
