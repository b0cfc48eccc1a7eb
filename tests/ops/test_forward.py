"""Every backend's forward equals the independent dense float64 reference on odd shapes."""
from __future__ import annotations

import random

import pytest
import torch

from anyup_neck.ops import window_attention
from anyup_neck.ops.torch_backend import _span_bound
from anyup_neck.ops.windows import window_bounds_1d
from anyup_neck.upsampler.official import dense_attention
from tests.ops.helpers import (CASE_IDS, CASES, compiled_op, cpu_isas, make_inputs, requires,
                               use_isa)


def _check(backend: str, case, dtype: torch.dtype, tol: float, kernels: str | None = None) -> None:
    """``backend`` through window_attention, or with ``kernels`` the compiled op directly."""
    B, N, d, C, out_size, in_size, ratio, _ = case
    q, k, v = make_inputs(B, N, d, C, out_size, in_size)
    expected = dense_attention(q, k, v, N, ratio)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    if kernels is None:
        got = window_attention(q, k, v, num_heads=N, window_ratio=ratio, backend=backend)
    else:
        got = compiled_op(q, k, v, N, ratio, kernels)
    assert got.shape == (B, C, *out_size) and got.dtype == dtype
    assert got.is_contiguous() or backend not in ('cpp', 'cuda')
    torch.testing.assert_close(got.double(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize('case', CASES, ids=CASE_IDS)
@pytest.mark.parametrize('isa', cpu_isas())
def test_cpp(case, isa):
    use_isa(isa)
    _check('cpp', case, torch.float64, 1e-12)
    _check('cpp', case, torch.float32, 1e-5)


@pytest.mark.parametrize('case', CASES, ids=CASE_IDS)
def test_cpp_through_the_shared_per_query_math(case):
    """The forward's weights through the per-query math the CUDA kernel runs
    (kernels='per_pixel'), instead of the CPU's lane-parallel softmax."""
    _check('cpp', case, torch.float64, 1e-12, kernels='per_pixel')
    _check('cpp', case, torch.float32, 1e-5, kernels='per_pixel')


def test_kernels_choice_is_checked():
    with pytest.raises(RuntimeError, match="window_attention \\(CPU\\): kernels: expected auto, "
                                           "fast, per_pixel, tiled or tiled_racecheck, got 'quick'"):
        _check('cpp', CASES[0], torch.float64, 1e-12, kernels='quick')


@pytest.mark.parametrize('case', CASES, ids=CASE_IDS)
@pytest.mark.parametrize('backend', ['torch', 'dense'])
def test_pytorch_backends(case, backend):
    _check(backend, case, torch.float64, 1e-12)


def test_torch_backend_span_bound_holds_every_tile():
    """The tiled PyTorch backend sizes its tiles' key spans from the window rule in real numbers
    (shapes that never wait for tensor values): never narrower than the float32 rule's widest
    span, at most two wider."""
    generator = random.Random(0)
    for _ in range(500):
        out_len, in_len = generator.randint(1, 300), generator.randint(1, 80)
        tile = generator.randint(1, 32)
        ratio = generator.choice([0.0, 0.05, 0.1, 0.13, 0.25, 0.5, generator.uniform(0, 0.6)])
        start, stop = window_bounds_1d(out_len, in_len, ratio)
        widest = max(int(stop[min(i + tile, out_len) - 1] - start[i])
                     for i in range(0, out_len, tile))
        bound = _span_bound(out_len, in_len, tile, ratio)
        assert widest <= bound <= widest + 2, (out_len, in_len, tile, ratio, widest, bound)


def test_torch_backend_compiles_in_one_graph():
    """The default CUDA backend has no data-dependent shape, so torch.compile(fullgraph=True)
    of a model using it works (on the CPU here; the same code runs on CUDA)."""
    q, k, v = make_inputs(2, 2, 4, 6, (20, 24), (5, 6), dtype=torch.float32)

    def attend(q, k, v):
        return window_attention(q, k, v, num_heads=2, window_ratio=0.1, backend='torch')

    compiled = torch.compile(attend, fullgraph=True, backend='aot_eager')
    torch.testing.assert_close(compiled(q, k, v), attend(q, k, v), rtol=0, atol=0)


@pytest.mark.parametrize('backend', ['cpp', 'torch'])
def test_non_contiguous_inputs(backend):
    """Strided rows, channels-last and channel-sliced views give the contiguous result."""
    q, k, v = make_inputs(2, 4, 8, 6, (14, 9), (5, 6))
    q_rows = q.repeat_interleave(2, dim=2)[:, :, ::2]                # rows two apart
    k_cl = k.contiguous(memory_format=torch.channels_last)
    v_sliced = torch.cat([v, torch.zeros_like(v)], dim=1)[:, :6]     # batch stride 12 * h * w
    q_cl = q.contiguous(memory_format=torch.channels_last)
    expected = dense_attention(q, k, v, 4, 0.1)
    for args in ((q_rows, k_cl, v_sliced), (q_cl, k.transpose(2, 3).contiguous().transpose(2, 3),
                                            v.contiguous(memory_format=torch.channels_last))):
        assert not all(t.is_contiguous() for t in args)
        got = window_attention(*args, num_heads=4, window_ratio=0.1, backend=backend)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_auto_picks_cpp_on_cpu():
    from anyup_neck.ops import resolve_backend
    assert resolve_backend('auto', torch.device('cpu'), torch.float32) == 'cpp'
    assert resolve_backend('auto', torch.device('cpu'), torch.float64) == 'cpp'
    assert resolve_backend('auto', torch.device('cpu'), torch.bfloat16) == 'torch'


def _float64_moves_a_window(H: int, h: int, ratio: float) -> bool:
    """Whether evaluating the window rule in float64 changes some window of an H-pixel axis."""
    import numpy as np
    f32, r32 = np.float32, np.float32(ratio)
    c32 = (np.arange(H, dtype=f32) + f32(0.5)) / f32(H)
    c64 = (np.arange(H) + 0.5) / H
    edges32 = (np.floor(np.clip(c32 - r32, 0, 1) * f32(h)), np.ceil(np.clip(c32 + r32, 0, 1) * f32(h)))
    edges64 = (np.floor(np.clip(c64 - ratio, 0, 1) * h), np.ceil(np.clip(c64 + ratio, 0, 1) * h))
    return any((a != b).any() for a, b in zip(edges32, edges64))


def test_window_rule_is_float32():
    """A shape where float64 arithmetic would move a window edge follows the float32 rule."""
    H, h = next((H, h) for H in range(2, 200) for h in range(2, 40)
                if _float64_moves_a_window(H, h, 0.1))
    _check('cpp', (1, 2, 4, 3, (H, 3), (h, 2), 0.1, ''), torch.float64, 1e-12)


def test_natten_equals_the_op_for_global_windows():
    """NATTEN approximates other windows; with r = 0 and integer scales it is exact."""
    requires('natten')
    q, k, v = make_inputs(2, 2, 8, 5, (8, 12), (4, 3), dtype=torch.float32)
    got = window_attention(q, k, v, num_heads=2, window_ratio=0.0, backend='natten')
    expected = dense_attention(q.double(), k.double(), v.double(), 2, 0.0)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_auto_picks_torch_on_cuda():
    """The per-pixel CUDA kernels measured slower than the tiled PyTorch backend (see
    resolve_backend); the decision needs no GPU to check."""
    from anyup_neck.ops import resolve_backend
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        assert resolve_backend('auto', torch.device('cuda', 0), dtype) == 'torch'
    assert resolve_backend('auto', torch.device('meta'), torch.float32) == 'torch'


@pytest.mark.parametrize('v_dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('backend', ['auto', 'cpp', 'torch'])
def test_autocast_on_cpu_runs_in_float32(backend, v_dtype):
    """Under CPU autocast, q and k from autocast layers arrive in bfloat16: the op runs in
    float32 (the C++ kernels have no bfloat16) and returns v's dtype; gradients reach the
    inputs in their own dtypes."""
    q, k, v = make_inputs(2, 4, 8, 6, (9, 11), (4, 5), dtype=torch.float32)
    expected = window_attention(q.bfloat16().float(), k.bfloat16().float(), v.to(v_dtype).float(),
                                num_heads=4, window_ratio=0.1, backend='torch')
    leaves = [t.detach().requires_grad_() for t in (q.bfloat16(), k.bfloat16(), v.to(v_dtype))]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = window_attention(*leaves, num_heads=4, window_ratio=0.1, backend=backend)
    assert got.dtype == v_dtype
    tol = 1e-5 if v_dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got.float(), expected, rtol=tol, atol=tol)
    got.float().sum().backward()
    assert [t.grad.dtype for t in leaves] == [t.dtype for t in leaves]


def test_autocast_keeps_float64():
    q, k, v = make_inputs(1, 2, 4, 3, (5, 6), (3, 4))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = window_attention(q, k, v, num_heads=2, window_ratio=0.1)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, dense_attention(q, k, v, 2, 0.1), rtol=1e-12, atol=1e-12)
