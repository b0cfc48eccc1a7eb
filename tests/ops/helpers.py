"""Shared pieces of the op tests: odd problem shapes, input makers, backend parameters."""
from __future__ import annotations

import pytest
import torch

from anyup_neck.ops import BACKENDS
from anyup_neck.ops import extension

#: (B, N, d, C, (H, W), (h, w), ratio, what it covers)
CASES = [
    (1, 1, 8, 1, (1, 9), (3, 4), 0.1, '1xN output, one head, C=1'),
    (1, 2, 8, 3, (9, 1), (4, 3), 0.25, 'Nx1 output'),
    (2, 4, 8, 5, (13, 17), (4, 5), 0.1, 'batch 2, non-square, non-integer ratio'),
    (1, 8, 4, 7, (11, 6), (5, 7), 0.05, '8 heads, tiny windows'),
    (1, 4, 8, 1536, (5, 7), (3, 4), 0.1, 'C=1536'),
    (1, 2, 8, 4, (5, 6), (8, 8), 0.1, 'output smaller than the features'),
    (2, 4, 4, 3, (7, 9), (6, 5), 0.0, 'global window'),
    (1, 2, 8, 6, (17, 12), (3, 3), 0.5, 'windows of most of the map'),
    (1, 4, 2, 2, (2, 3), (24, 24), 0.0, 'window larger than one logits chunk (576 keys)'),
    (1, 4, 2, 2, (2, 3), (36, 36), 0.0, 'window of several chunks (1296 keys x 4 heads)'),
]
CASE_IDS = [c[-1] for c in CASES]


def make_inputs(B: int, N: int, d: int, C: int, out_size, in_size, dtype=torch.float64,
                device='cpu', seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random q (B, N*d, H, W), k (B, N*d, h, w), v (B, C, h, w)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, N * d, *out_size, generator=g, dtype=torch.float64)
    k = torch.randn(B, N * d, *in_size, generator=g, dtype=torch.float64)
    v = torch.randn(B, C, *in_size, generator=g, dtype=torch.float64)
    return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v))


def cpu_isas() -> list:
    """One pytest param per CPU instruction set of the compiled kernels (skipped if unsupported)."""
    return [pytest.param(isa, id=f'cpp-{isa}') for isa in ('base', 'avx2', 'avx512')]


def use_isa(isa: str) -> None:
    """Run the CPU kernels built for ``isa`` for the rest of the test, or skip if this processor
    lacks it; tests/ops/conftest.py restores the selection after every test."""
    if not extension.available():
        pytest.fail(f'the compiled extension is not built: {extension.LOAD_ERROR}')
    try:
        torch.ops.anyup_neck._set_cpu_isa(isa)
    except RuntimeError as error:
        if 'does not support' in str(error):
            pytest.skip(f'this processor has no {isa}')
        raise


def compiled_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int,
                window_ratio: float, kernels: str) -> torch.Tensor:
    """The compiled op's output with the private ``kernels`` choice (differentiable)."""
    scale = (q.shape[1] // num_heads) ** -0.5
    return torch.ops.anyup_neck.window_attention_forward(q, k, v, num_heads, window_ratio, scale,
                                                         kernels)[0]


def requires(backend: str) -> None:
    """Skip when an optional backend is not installed here."""
    if backend not in BACKENDS:
        pytest.skip(f'backend {backend!r} not available here')
