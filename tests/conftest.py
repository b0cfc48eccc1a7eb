"""Shared pytest fixtures and helpers."""
from __future__ import annotations

import pytest
import torch

from anyup_neck import AnyUp, runtime

runtime.apply()  # the fast-CPU process settings, before any test runs (make test = pytest)


def randomized_anyup(seed: int = 0, dtype: torch.dtype = torch.float64, **kwargs) -> AnyUp:
    """An AnyUp whose every parameter is random, so no path is a trivial identity.

    (Default init leaves norm weights at 1 and biases at 0, which would hide mistakes in
    the order of scale/shift.)
    """
    torch.manual_seed(seed)
    model = AnyUp(**kwargs)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == 'rope.freqs':
                continue
            if p.dim() == 1:
                p.copy_(1.0 + 0.3 * torch.randn_like(p) if name.endswith('weight')
                        else 0.3 * torch.randn_like(p))
    return model.to(dtype).eval()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def no_tf32():
    """Full float32 matmuls and convolutions on CUDA (PyTorch's default allows TF32 in cuDNN)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
