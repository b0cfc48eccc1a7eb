"""Validation metric of upsampler training: held-out crop cos-MSE, AnyUp vs. bilinear."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmseg.registry import METRICS


@METRICS.register_module()
class CropConsistencyMetric(BaseMetric):
    """Mean over held-out images of what ``AnyUpCropConsistency.predict`` returns per image.

    Logged as ``crop/<backbone>/anyup`` (lower is better; it should fall during training) and
    ``crop/<backbone>/bilinear`` (the same crops with bilinear upsampling: a fixed reference).
    """

    default_prefix = 'crop'

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        self.results.extend(data_samples)

    def compute_metrics(self, results: list[dict]) -> dict[str, float]:
        if not results:
            raise ValueError('results: expected per-image metrics from the validation set, '
                             'got none (empty val_dataloader?)')
        return {key: float(np.mean([r[key] for r in results])) for key in results[0]}
