"""The clip scorer with its batches measured: inference latency and batch size per forward pass."""

from __future__ import annotations

import numpy as np
import torch

from model.inference import ClipScorer
from server.observability.metrics import observe_inference


class ObservedScorer(ClipScorer):
    """``ClipScorer`` whose every forward pass is timed into ``wardwatch_inference_seconds`` and counted into
    ``wardwatch_inference_batch_size``.

    Only :meth:`ClipScorer.infer` is timed: decoding and tensor preparation run in the decode thread
    (overlapped with the previous batch), so they are not inference latency.
    """

    def infer(self, inputs: torch.Tensor) -> np.ndarray:
        with observe_inference(int(inputs.shape[0])):
            return super().infer(inputs)
