"""One list of bad inputs for every public entry of AnyUp (and the mm neck built on it).

Each case is (argument, bad value, error type, message pattern); the message names the
argument, the expected and the actual value. The shapes fit :data:`MODEL_ARGS` with
:data:`IMAGE` (batch 2) and :data:`FEATURES`.
"""
from __future__ import annotations

import pytest
import torch

MODEL_ARGS = dict(qk_dim=16, lfu_basis=8, num_heads=2)
IMAGE = torch.randn(2, 3, 16, 16)
FEATURES = torch.randn(2, 4, 2, 2)

IMAGE_CASES = [
    (torch.randn(2, 1, 16, 16), ValueError, r'image: expected shape \(B, 3, H, W\), got \(2, 1, 16, 16\)'),
    (torch.randn(3, 16, 16), ValueError, r'image: expected shape .* got \(3, 16, 16\)'),
    (torch.randn(2, 3, 0, 16), ValueError, 'image: expected non-empty'),
    (IMAGE.to(torch.uint8), TypeError, 'image: expected a floating-point dtype, got torch.uint8'),
    (IMAGE.numpy(), TypeError, 'image: expected a torch.Tensor, got ndarray'),
    (IMAGE.double(), TypeError,
     r"image: expected dtype torch.float32 \(the model's; under torch.autocast also float16 or "
     r'bfloat16\), got torch.float64'),
    (IMAGE.to('meta'), ValueError, r"image: expected device cpu \(the model's\), got meta"),
]
FEATURE_CASES = [
    (torch.randn(3, 4, 2, 2), ValueError, 'features: expected batch size 2 .* got 3'),
    (torch.randn(2, 4, 2), ValueError, r'features: expected shape \(B, C, h, w\), got \(2, 4, 2\)'),
    (torch.randn(2, 4, 0, 2), ValueError, 'features: expected non-empty'),
    (torch.randn(2, 0, 2, 2), ValueError, 'features: expected non-empty'),
    (FEATURES.long(), TypeError, 'features: expected a floating-point dtype, got torch.int64'),
    (FEATURES.numpy(), TypeError, 'features: expected a torch.Tensor, got ndarray'),
    (FEATURES.to('meta'), ValueError, r'features: expected device cpu .* got meta'),
]
SIZE_CASES = [
    ((0, 8), ValueError, r'output_size: expected positive sizes, got \(0, 8\)'),
    ((-3, 8), ValueError, 'output_size: expected positive'),
    ((8.5, 8), TypeError, 'output_size: expected an int or a pair of ints'),
    ((8, 8, 8), TypeError, r'output_size: expected .* got \(8, 8, 8\)'),
]

#: every case, as pytest params with ids "argument-index"
BAD_INPUTS = [pytest.param(argument, *case, id=f'{argument}-{n}')
              for argument, cases in (('image', IMAGE_CASES), ('features', FEATURE_CASES),
                                      ('output_size', SIZE_CASES))
              for n, case in enumerate(cases)]
