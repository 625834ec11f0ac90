"""The clip scorer with its batches measured: inference latency and batch size per forward pass."""

from __future__ import annotations

import numpy as np

from ingest.clips import Clip
from model.inference import ClipScorer
from server.observability.metrics import observe_inference


class ObservedScorer(ClipScorer):
    """``ClipScorer`` whose every batch is timed into ``wardwatch_inference_seconds`` and counted into
    ``wardwatch_inference_batch_size``."""

    def _score_batch(self, batch: list[Clip]) -> np.ndarray:
        with observe_inference(len(batch)):
            return super()._score_batch(batch)
