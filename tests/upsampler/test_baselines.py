"""Training-free baselines behave as their definitions say."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from anyup_neck.upsampler.baselines import BASELINES, guided_filter


@pytest.mark.parametrize('name', sorted(BASELINES))
def test_shapes_and_constants(name):
    image = torch.randn(2, 3, 40, 24)
    feats = torch.full((2, 5, 4, 3), 0.7)
    out = BASELINES[name](image, feats, (20, 12))
    assert out.shape == (2, 5, 20, 12)
    torch.testing.assert_close(out, torch.full_like(out, 0.7))       # constants stay constant


def test_interpolations_are_torchs():
    feats = torch.randn(1, 3, 5, 7)
    for mode in ('bilinear', 'bicubic'):
        torch.testing.assert_close(BASELINES[mode](None, feats, (11, 13)),
                                   F.interpolate(feats, (11, 13), mode=mode, align_corners=False))
    torch.testing.assert_close(BASELINES['nearest'](None, feats, (10, 14)),
                               feats.repeat_interleave(2, 2).repeat_interleave(2, 3))


def test_guided_filter_follows_an_image_edge():
    """Features that change across an image edge jump at the edge instead of ramping."""
    image = torch.zeros(1, 3, 32, 32)
    image[..., 16:] = 3.0                                             # vertical edge at column 16
    feats = torch.zeros(1, 1, 4, 4)
    feats[..., 2:] = 1.0
    bilinear = BASELINES['bilinear'](image, feats, (32, 32))[0, 0, 0]
    guided = guided_filter(image, feats, (32, 32), eps=1e-4)[0, 0, 0]
    assert guided[16] - guided[15] > 4 * (bilinear[16] - bilinear[15])
    assert guided[16] - guided[15] > 0.5
