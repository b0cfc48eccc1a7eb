"""Loss terms of the crop-consistency objective (paper Sec. 4.3, App. C).

All take feature maps (N, C, H, W) and compute in float32 whatever the input dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cos_mse(pred: torch.Tensor, target: torch.Tensor, reduction: str = 'mean') -> torch.Tensor:
    """(1 - cosine similarity over channels) averaged over pixels, plus the mean squared error.

    pred, target: (N, C, H, W). ``reduction='mean'`` gives a scalar, ``'none'`` one value per
    sample (N,) whose mean is the scalar.
    """
    if pred.shape != target.shape:
        raise ValueError(f'target: expected the shape of pred {tuple(pred.shape)}, '
                         f'got {tuple(target.shape)}')
    if reduction not in ('mean', 'none'):
        raise ValueError(f"reduction: expected 'mean' or 'none', got {reduction!r}")
    pred, target = pred.float(), target.float()
    cosine = F.cosine_similarity(pred, target, dim=1)                     # (N, H, W)
    per_sample = (1.0 - cosine).flatten(1).mean(1) + (pred - target).square().flatten(1).mean(1)
    return per_sample.mean() if reduction == 'mean' else per_sample


def self_consistency_loss(augmented: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """cos-MSE of the upsampling guided by an augmented image against the clean one.

    The clean upsampling is the target: no gradient flows into it.
    """
    return cos_mse(augmented, clean.detach())


def input_consistency_loss(upsampled: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """cos-MSE between the upsampled map area-downsampled to the input grid and the input."""
    return cos_mse(F.adaptive_avg_pool2d(upsampled, features.shape[-2:]), features)
