"""Gradients of the compiled op: gradcheck in float64 and agreement with the dense reference."""
from __future__ import annotations

import pytest
import torch

from anyup_neck.ops import torch_backend, window_attention
from anyup_neck.upsampler.official import dense_attention
from tests.ops.helpers import CASE_IDS, CASES, compiled_op, cpu_isas, make_inputs, use_isa


def _grads(fn, q, k, v, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    fn(*leaves).backward(grad_out)
    return [t.grad for t in leaves]


def _torch_backend(heads: int, ratio: float):
    """``window_attention`` through the tiled PyTorch backend, as a function of (q, k, v)."""
    def attend(q, k, v):
        return window_attention(q, k, v, num_heads=heads, window_ratio=ratio, backend='torch')
    return attend


def _compare_with_reference(case, dtype: torch.dtype, tol: float, seed: int = 0,
                            kernels: str = 'auto', torch_backend_op: bool = False) -> None:
    """Gradients of the compiled op (``kernels``), or with ``torch_backend_op`` of the tiled
    PyTorch backend, against autograd through the dense reference in float64."""
    B, N, d, C, out_size, in_size, ratio, _ = case
    q, k, v = make_inputs(B, N, d, C, out_size, in_size, seed=seed)
    grad_out = torch.randn(B, C, *out_size, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(seed + 1))
    expected = _grads(lambda *t: dense_attention(*t, N, ratio), q, k, v, grad_out)
    attend = (_torch_backend(N, ratio) if torch_backend_op
              else lambda *t: compiled_op(*t, N, ratio, kernels))
    got = _grads(attend, q.to(dtype), k.to(dtype), v.to(dtype), grad_out.to(dtype))
    for name, g, e in zip('qkv', got, expected):
        assert g.dtype == dtype and g.shape == e.shape, name
        torch.testing.assert_close(g.double(), e, rtol=tol, atol=tol, msg=lambda m: f'd{name}: {m}')


@pytest.mark.parametrize('case', CASES, ids=CASE_IDS)
@pytest.mark.parametrize('isa', cpu_isas())
def test_gradients_match_reference(case, isa):
    use_isa(isa)
    _compare_with_reference(case, torch.float64, 1e-11)
    _compare_with_reference(case, torch.float32, 2e-4)


@pytest.mark.parametrize('case', CASES, ids=CASE_IDS)
def test_shared_key_pass_matches_reference(case):
    """The forward, pixel pass and key pass through the per-query and per-key math the CUDA
    kernels run (kernels='per_pixel')."""
    _compare_with_reference(case, torch.float64, 1e-11, kernels='per_pixel')


def test_long_rows_of_pixels():
    """A key seen by more pixels of one row than the key pass takes in one run."""
    _compare_with_reference((1, 4, 2, 3, (1, 1500), (2, 3), 0.0, ''), torch.float64, 1e-11)


@pytest.mark.parametrize('ratio,out_size,in_size,heads', [
    (0.1, (5, 7), (3, 4), 2),
    (0.0, (3, 2), (4, 5), 4),
    (0.3, (2, 9), (6, 2), 1),
    (0.0, (2, 1), (33, 32), 4),   # 1056 keys: forward and pixel pass in several chunks
], ids=['r=0.1', 'global', 'r=0.3 one head', 'several chunks'])
def test_gradcheck(ratio, out_size, in_size, heads):
    q, k, v = (t.requires_grad_() for t in make_inputs(1, heads, 2, 3, out_size, in_size))
    assert torch.autograd.gradcheck(
        lambda *t: window_attention(*t, num_heads=heads, window_ratio=ratio, backend='cpp'),
        (q, k, v), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=in_size[0] > 30)


def test_backward_is_deterministic():
    q, k, v = (t.float().requires_grad_() for t in make_inputs(2, 4, 8, 16, (31, 29), (6, 5)))
    grad_out = torch.randn(2, 16, 31, 29)
    runs = [_grads(lambda *t: window_attention(*t, num_heads=4, window_ratio=0.1, backend='cpp'),
                   q, k, v, grad_out) for _ in range(2)]
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.parametrize('chunk_elements', [1 << 24, 1], ids=['one chunk', 'a chunk per tile row'])
@pytest.mark.parametrize('case', [CASES[2], CASES[7], (1, 2, 4, 3, (23, 10), (5, 4), 0.2, ''),
                                  (2, 2, 4, 3, (16, 12), (4, 3), 0.2, '')],
                         ids=[CASES[2][-1], CASES[7][-1], 'last tile row short',
                              'whole tiles, nothing padded'])
def test_torch_backend_gradients(case, chunk_elements, monkeypatch):
    """The tiled PyTorch backend under autograd (queries split by chunk of tile rows, outputs
    joined by one cat) against the dense reference, with one chunk and with many; without
    autograd (outputs written into the final layout) the same values."""
    monkeypatch.setattr(torch_backend, '_CHUNK_ELEMENTS', chunk_elements)
    _compare_with_reference(case, torch.float64, 1e-11, torch_backend_op=True)
    B, N, d, C, out_size, in_size, ratio, _ = case
    q, k, v = make_inputs(B, N, d, C, out_size, in_size)
    attend = _torch_backend(N, ratio)
    with torch.no_grad():
        untracked = attend(q, k, v)
    leaves = [t.requires_grad_() for t in (q, k, v)]
    torch.testing.assert_close(untracked, attend(*leaves), rtol=0, atol=0)
    assert torch.autograd.gradcheck(attend, leaves, eps=1e-6, atol=1e-7, rtol=1e-5,
                                    fast_mode=True)
