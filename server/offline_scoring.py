"""Scoring half of ``wardwatch ingest``: load a checkpoint, score clips, merge them into events.

Why a module of its own: it is the only part of the offline ingest that needs torch and the model code,
and importing torch costs seconds and ~650 MB of resident memory. :mod:`server.offline` imports this
module only when scoring was asked for, so ``wardwatch ingest --no-score`` stays a light process whose
memory is the decoder's (tests/server/test_offline_imports.py checks that torch stays out).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ingest.clips import Clip
from model.events import EventRule, detect_events
from model.inference import ClipScorer
from model.weights import LoadedModel, load_checkpoint
from server.settings import DEFAULT_MODEL_PATH

__all__ = ["LoadedModel", "load_model", "score_events"]


def load_model(model_path: Path | None, device: str) -> LoadedModel:
    """The checkpoint at ``model_path`` (default: the shipped demo model) on ``device``."""
    return load_checkpoint(model_path or DEFAULT_MODEL_PATH, device=device)


def score_events(clips: Iterable[Clip], loaded: LoadedModel, threshold: float) -> list[dict[str, Any]]:
    """Score every clip and return the merged events as plain dicts (without their clip indices)."""
    scored = ClipScorer(loaded).score_all(clips)
    found = detect_events(scored.starts, scored.ends, scored.scores, loaded.class_names,
                          EventRule(threshold=threshold))
    return [{k: v for k, v in dataclasses.asdict(e).items() if k != "clip_indices"} for e in found]
