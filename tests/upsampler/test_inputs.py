"""Bad inputs raise ValueError/TypeError naming the argument, the expected and the actual."""
from __future__ import annotations

import pytest
import torch

from anyup_neck import AnyUp

MODEL = AnyUp(qk_dim=16, lfu_basis=8, num_heads=2).eval()
IMAGE = torch.randn(2, 3, 16, 16)
FEATS = torch.randn(2, 4, 2, 2)


@pytest.mark.parametrize('image,feats,size,error,pattern', [
    (torch.randn(2, 1, 16, 16), FEATS, None, ValueError, r'image: expected shape \(B, 3, H, W\), got \(2, 1, 16, 16\)'),
    (torch.randn(3, 16, 16), FEATS, None, ValueError, r'image: expected shape .* got \(3, 16, 16\)'),
    (IMAGE, torch.randn(3, 4, 2, 2), None, ValueError, 'features: expected batch size 2 .* got 3'),
    (IMAGE, torch.randn(2, 4, 2), None, ValueError, r'features: expected shape \(B, C, h, w\), got \(2, 4, 2\)'),
    (torch.randn(2, 3, 0, 16), FEATS, None, ValueError, 'image: expected non-empty'),
    (IMAGE, torch.randn(2, 4, 0, 2), None, ValueError, 'features: expected non-empty'),
    (IMAGE, torch.randn(2, 0, 2, 2), None, ValueError, 'features: expected non-empty'),
    (IMAGE, FEATS, (0, 8), ValueError, r'output_size: expected positive sizes, got \(0, 8\)'),
    (IMAGE, FEATS, (-3, 8), ValueError, 'output_size: expected positive'),
    (IMAGE, FEATS, (8.5, 8), TypeError, 'output_size: expected an int or a pair of ints'),
    (IMAGE, FEATS, (8, 8, 8), TypeError, r'output_size: expected .* got \(8, 8, 8\)'),
    (IMAGE.to(torch.uint8), FEATS, None, TypeError, 'image: expected a floating-point dtype, got torch.uint8'),
    (IMAGE, FEATS.long(), None, TypeError, 'features: expected a floating-point dtype, got torch.int64'),
    (IMAGE.numpy(), FEATS, None, TypeError, 'image: expected a torch.Tensor, got ndarray'),
])
def test_bad_input(image, feats, size, error, pattern):
    with pytest.raises(error, match=pattern):
        MODEL(image, feats, output_size=size)


@pytest.mark.parametrize('kwargs,pattern', [
    (dict(qk_dim=16, num_heads=3), 'num_heads: expected a divisor of qk_dim=16, got 3'),
    (dict(window_ratio=1.5), r'window_ratio: expected a number in \[0, 1\], got 1.5'),
    (dict(lfu_mode='softmax'), "lfu_mode: expected one of .* got 'softmax'"),
    (dict(lfu_kernel_size=4), 'lfu_kernel_size: expected an odd positive int, got 4'),
    (dict(qk_dim=20, num_heads=2), 'qk_dim: expected a positive multiple of 8 .* got 20'),
    (dict(lfu_basis=12), 'lfu_basis: expected a positive multiple of 8 .* got 12'),
])
def test_bad_construction(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        AnyUp(**kwargs)


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="backend: expected one of .*got 'fast'"):
        MODEL(IMAGE, FEATS, backend='fast')


def test_int_output_size_means_square():
    with torch.no_grad():
        assert MODEL(IMAGE, FEATS, output_size=7).shape == (2, 4, 7, 7)
