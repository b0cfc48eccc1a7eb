"""How the tests measure closeness: one scale-relative error for every comparison."""
from __future__ import annotations

import torch


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected|, both taken to float64 on the CPU (any devices,
    dtypes and autograd state); the shapes must agree."""
    got, expected = got.detach().cpu().double(), expected.detach().cpu().double()
    assert got.shape == expected.shape, (tuple(got.shape), tuple(expected.shape))
    return float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-30))
