"""Training-free upsampling baselines with AnyUp's call signature, for A/B comparisons.

Each baseline is ``fn(image, features, output_size) -> (B, C, H, W)`` where ``image`` is the
(B, 3, H_img, W_img) ImageNet-normalised guidance image (ignored by the purely spatial
methods) and ``features`` is (B, C, h, w).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Upsampler = Callable[[torch.Tensor, torch.Tensor, tuple[int, int]], torch.Tensor]


def interpolate(mode: str) -> Upsampler:
    """Plain resampling with ``F.interpolate`` (``'nearest'``, ``'bilinear'``, ``'bicubic'``)."""
    def upsample(image: torch.Tensor, features: torch.Tensor,
                 output_size: tuple[int, int]) -> torch.Tensor:
        if mode == 'nearest':
            return F.interpolate(features, size=output_size, mode='nearest')
        return F.interpolate(features, size=output_size, mode=mode, align_corners=False)
    upsample.__name__ = f'upsample_{mode}'
    return upsample


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, windows clipped at the border (count-normalised)."""
    k = 2 * radius + 1
    return F.avg_pool2d(x, k, stride=1, padding=radius, count_include_pad=False)


def guided_filter(image: torch.Tensor, features: torch.Tensor, output_size: tuple[int, int],
                  radius: int | None = None, eps: float = 1e-2) -> torch.Tensor:
    """Bilinear upsampling refined by a guided filter (He et al., 2010) on the image.

    The guide is the image's luminance resized to ``output_size``; every feature channel is
    fitted locally as ``a * guide + b`` in windows of radius ``radius`` (default: about one
    feature cell) and the averaged fit is returned. Edges of the image carry over into the
    features while flat regions stay smooth.
    """
    H, W = output_size
    if radius is None:
        radius = max(1, round(max(H / features.shape[-2], W / features.shape[-1]) / 2))
    guide = F.interpolate(image.mean(dim=1, keepdim=True), size=output_size, mode='bilinear',
                          align_corners=False).to(features.dtype)
    p = F.interpolate(features, size=output_size, mode='bilinear', align_corners=False)
    mean_i = _box(guide, radius)
    var_i = _box(guide * guide, radius) - mean_i * mean_i
    mean_p = _box(p, radius)
    cov_ip = _box(guide * p, radius) - mean_i * mean_p
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return _box(a, radius) * guide + _box(b, radius)


#: Baselines by the name users pass on the command line and in configs.
BASELINES: dict[str, Upsampler] = {
    'nearest': interpolate('nearest'),
    'bilinear': interpolate('bilinear'),
    'bicubic': interpolate('bicubic'),
    'guided_filter': guided_filter,
}
