"""Loads each model version once per process (STYLE.md #10) and hands the same instance to every task."""

from __future__ import annotations

import threading

from model.weights import LoadedModel, load_checkpoint
from server.db.tables import ModelVersion


class ModelCache:
    """Thread-safe cache of loaded checkpoints, keyed by model version id.

    A task asks for the *currently active* version each time, so promoting a new version takes effect on the
    next task without restarting the worker.
    """

    def __init__(self, device: str = "auto", max_models: int = 2) -> None:
        self._device = device
        self._max_models = max_models
        self._models: dict[int, LoadedModel] = {}
        self._lock = threading.Lock()

    def get(self, version: ModelVersion) -> LoadedModel:
        with self._lock:
            loaded = self._models.get(version.id)
            if loaded is None:
                loaded = load_checkpoint(version.checkpoint_path, device=self._device)
                if loaded.sha256 != version.checkpoint_sha256:
                    raise RuntimeError(
                        f"checkpoint {version.checkpoint_path} changed on disk since model version {version.id} "
                        "was registered (sha256 mismatch)"
                    )
                while len(self._models) >= self._max_models:
                    self._models.pop(next(iter(self._models)))
                self._models[version.id] = loaded
            return loaded
