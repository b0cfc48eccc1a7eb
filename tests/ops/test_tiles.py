"""The tiled CUDA kernels' block code (csrc/common/window_tiles.h) emulated on the CPU: the op's
private kernels='tiled' runs each block's phases thread by thread between the barriers, with
the GPU's shared-memory indexing, against the independent dense float64 reference."""
from __future__ import annotations

import json
import random

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from anyup_neck.ops import extension
from anyup_neck.upsampler.official import dense_attention
from tests.numerics import relative_error
from tests.ops.helpers import CASE_IDS, CASES, compiled_op, make_inputs

pytestmark = pytest.mark.skipif(not extension.available(), reason='needs the compiled extension')

#: Beyond CASES: heads of many q/k channel chunks, spans of several key chunks over many
#: pixel tiles (the backward in bands of one tile row), and bands of several tile rows.
EXTRA = [
    (1, 4, 275, 2, (3, 10), (5, 4), 0.2, 'd=275: nine q/k channel chunks per head'),
    (2, 2, 4, 3, (19, 21), (17, 18), 0.3, 'many pixel tiles, spans of 3 key chunks'),
    (1, 2, 4, 100, (40, 9), (5, 3), 0.1, 'bands of two tile rows, the last short, C=100'),
]
ALL = CASES + EXTRA
ALL_IDS = CASE_IDS + [c[-1] for c in EXTRA]


def _forward_and_grads(case, dtype: torch.dtype, kernels: str):
    B, N, d, C, out_size, in_size, ratio, _ = case
    q, k, v = make_inputs(B, N, d, C, out_size, in_size)
    grad_out = torch.randn(B, C, *out_size, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(1))
    leaves = [t.to(dtype).requires_grad_() for t in (q, k, v)]
    if kernels == 'reference':
        out = dense_attention(*leaves, N, ratio)
    else:
        out = compiled_op(*leaves, N, ratio, kernels)
    out.backward(grad_out.to(dtype))
    return out.detach(), [t.grad for t in leaves]


def _op_results(q, k, v, grad, args, kernels: str) -> tuple[torch.Tensor, ...]:
    """out, lse, dq, dk, dv of the op's forward and backward (args: heads, ratio, scale)."""
    out, lse = torch.ops.anyup_neck.window_attention_forward(q, k, v, *args, kernels)
    grads = torch.ops.anyup_neck.window_attention_backward(grad, q, k, v, lse, *args, kernels)
    return (out, lse, *grads)


@pytest.mark.parametrize('case', ALL, ids=ALL_IDS)
def test_tiled_matches_reference(case):
    expected, expected_grads = _forward_and_grads(case, torch.float64, 'reference')
    for dtype, tol in ((torch.float64, 1e-11), (torch.float32, 2e-4)):
        got, grads = _forward_and_grads(case, dtype, 'tiled')
        assert got.dtype == dtype and got.is_contiguous()
        torch.testing.assert_close(got.double(), expected, rtol=tol, atol=tol)
        for name, g, e in zip('qkv', grads, expected_grads):
            assert g.dtype == dtype and g.shape == e.shape
            torch.testing.assert_close(g.double(), e, rtol=tol, atol=tol,
                                       msg=lambda m: f'{dtype} d{name}: {m}')


#: Scale-relative error bounds against float64 for inputs in half precision (their rounding).
HALF_TOLERANCE = {torch.float16: 4e-3, torch.bfloat16: 3e-2}


@pytest.mark.parametrize('dtype', list(HALF_TOLERANCE), ids=str)
@pytest.mark.parametrize('case', ALL, ids=ALL_IDS)
def test_tiled_in_half_precision(case, dtype):
    """float16 and bfloat16 inputs with float32 accumulation, the GPU's types: shared memory,
    lse and the partial rows in float32, out and dq written once in the inputs' dtype (from
    float32 sums kept apart where a span takes several key chunks)."""
    expected, expected_grads = _forward_and_grads(case, torch.float64, 'reference')
    got, grads = _forward_and_grads(case, dtype, 'tiled')
    assert got.dtype == dtype and relative_error(got, expected) < HALF_TOLERANCE[dtype]
    for name, g, e in zip('qkv', grads, expected_grads):
        assert g.dtype == dtype and relative_error(g, e) < HALF_TOLERANCE[dtype], name


def test_tiled_lse_is_the_per_pixel_kernels():
    """The forward's saved statistics are the same as the other kernels' (any backward works
    with any forward)."""
    q, k, v = make_inputs(2, 4, 8, 5, (13, 17), (4, 5))
    args = (4, 0.1, 8 ** -0.5)
    out_t, lse_t = torch.ops.anyup_neck.window_attention_forward(q, k, v, *args, 'tiled')
    out_f, lse_f = torch.ops.anyup_neck.window_attention_forward(q, k, v, *args, 'fast')
    torch.testing.assert_close(lse_t, lse_f, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out_t, out_f, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(out_t)
    mixed = torch.ops.anyup_neck.window_attention_backward(grad, q, k, v, lse_f, *args, 'tiled')
    fast = torch.ops.anyup_neck.window_attention_backward(grad, q, k, v, lse_f, *args, 'fast')
    for a, b in zip(mixed, fast):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


def test_tiled_channels_last_queries():
    q, k, v = make_inputs(1, 2, 8, 6, (10, 9), (5, 6))
    expected = dense_attention(q, k, v, 2, 0.1)
    got = compiled_op(q.contiguous(memory_format=torch.channels_last), k, v, 2, 0.1, 'tiled')
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('ratio,out_size,in_size,heads', [
    (0.1, (5, 7), (3, 4), 2),
    (0.0, (3, 2), (4, 5), 4),
    (0.3, (9, 10), (6, 2), 1),
    (0.0, (2, 1), (12, 11), 3),   # 132 keys: spans of several key chunks
], ids=['r=0.1', 'global', 'r=0.3 two pixel tiles', 'several key chunks'])
def test_tiled_gradcheck(ratio, out_size, in_size, heads):
    q, k, v = (t.requires_grad_() for t in make_inputs(1, heads, 2, 3, out_size, in_size))
    assert torch.autograd.gradcheck(lambda *t: compiled_op(*t, heads, ratio, 'tiled'), (q, k, v),
                                    eps=1e-6, atol=1e-7, rtol=1e-5)


def test_tiled_backward_is_deterministic():
    q, k, v = (t.float().requires_grad_() for t in make_inputs(2, 4, 8, 16, (31, 29), (6, 5)))
    grad_out = torch.randn(2, 16, 31, 29)
    runs = []
    for _ in range(2):
        for t in (q, k, v):
            t.grad = None
        compiled_op(q, k, v, 4, 0.1, 'tiled').backward(grad_out)
        runs.append([t.grad.clone() for t in (q, k, v)])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.parametrize('case', ALL + [(1, 4, 8, 8, (60, 64), (9, 9), 0.13, '')],
                         ids=ALL_IDS + ['upsampling scale, several bands'])
def test_tiled_has_no_races(case):
    """Every phase's threads and every launch's blocks in reverse order give the same bits as
    in order, no shared-memory word is changed by two threads of a phase and no output element
    by two blocks of a launch (kernels='tiled_racecheck', which stops otherwise): no thread
    reads or writes what another thread of its block writes between the same two barriers, no
    block depends on another of its launch or updates what another updates. In float32: the
    threads, blocks and shared-memory indexing are those of every dtype (float16 and bfloat16
    accumulate in float32 shared memory; float64 has the same indexing in wider words), and the
    write check costs a scan of the block's shared memory per thread and phase."""
    B, N, d, C, out_size, in_size, ratio, _ = case
    q, k, v = (t.float() for t in make_inputs(B, N, d, C, out_size, in_size))
    grad = torch.randn(B, C, *out_size, generator=torch.Generator().manual_seed(3))
    args = (N, ratio, d ** -0.5)
    results = [_op_results(q, k, v, grad, args, kernels)
               for kernels in ('tiled', 'tiled_racecheck')]
    for name, a, b in zip(('out', 'lse', 'dq', 'dk', 'dv'), *results):
        assert torch.equal(a, b), name


def test_tiled_at_upsampling_scale():
    """224x232 from 32x33 (about 7 pixels per key), ratio 0.13: spans of 36 to 121 keys, so one
    call has tiles of one key chunk and of two, and the backward runs in several bands; against
    the CPU's own kernels in float64 (the dense reference would be 50k x 1k)."""
    q, k, v = (t.requires_grad_() for t in make_inputs(1, 4, 8, 8, (224, 232), (32, 33)))
    grad_out = torch.randn(1, 8, 224, 232, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(2))
    results = []
    for kernels in ('tiled', 'fast'):
        out = compiled_op(q, k, v, 4, 0.13, kernels)
        results.append([out, *torch.autograd.grad(out, (q, k, v), grad_out)])
    for name, got, expected in zip(('out', 'dq', 'dk', 'dv'), *results):
        torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-11,
                                   msg=lambda m: f'{name}: {m}')


def test_tiled_equals_the_cpu_kernels_on_random_shapes():
    """150 seeded random problems (batch, heads, head width, channels, both maps' sizes, window
    ratio, NCHW or channels-last q): forward, lse and gradients as the CPU's own kernels give
    them, in float64. (A 7-minute run of such draws, 24,882 problems, agreed to 2e-14.)"""
    draw = random.Random(1)
    for seed in range(150):
        B, N, d = draw.randint(1, 2), draw.choice([1, 2, 3, 4, 8]), draw.choice([1, 2, 4, 8, 33])
        C = draw.choice([1, 3, 17, 64, 65, 130])
        out_size = (draw.randint(1, 40), draw.randint(1, 40))
        in_size = (draw.randint(1, 20), draw.randint(1, 20))
        ratio = draw.choice([0.0, 0.02, 0.1, 0.13, 0.25, 0.5, draw.uniform(0, 0.6)])
        q, k, v = make_inputs(B, N, d, C, out_size, in_size, seed=seed)
        if draw.random() < 0.3:
            q = q.contiguous(memory_format=torch.channels_last)
        args = (N, ratio, d ** -0.5)
        grad = torch.randn(B, C, *out_size, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(seed))
        results = [_op_results(q, k, v, grad, args, kernels) for kernels in ('tiled', 'fast')]
        for name, got, expected in zip(('out', 'lse', 'dq', 'dk', 'dv'), *results):
            scale = max(1.0, expected.abs().max().item())  # dq, dk vanish for 1-key windows
            assert (got - expected).abs().max().item() <= 1e-11 * scale, (
                name, B, N, d, C, out_size, in_size, ratio)


def _peak_allocated_bytes(run, trace_path) -> int:
    """The most bytes that ``run()`` held allocated at once beyond what it started with, from
    the profiler's allocation events (every CPU allocation and release, in order)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    prof.export_chrome_trace(str(trace_path))
    held = peak = 0
    for event in json.loads(trace_path.read_text())['traceEvents']:
        if event.get('name') == '[memory]':
            held += event['args']['Bytes']
            peak = max(peak, held)
    return peak


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_tiled_forward_and_backward_hold_at_most_2_5_outputs(dtype, tmp_path):
    """The op's memory bound, on the kernels' host code (the same allocations as the CUDA
    launcher's for the full-size maps: out, lse, dq, the backward's bands of partial rows):
    at 448 from 32's proportions (C = 384, 4 heads of 32, ratio 0.1, 196 output pixels per
    key) but 112 from 8, forward and backward, the output's gradient included, hold at most
    2.5 times the output above q, k and v, in float32 and in the half types, whose float32
    partial rows are bounded in bytes (an eighth of the output's elements gave 2.6 in
    bfloat16)."""
    q, k, v = (t.to(dtype) for t in make_inputs(1, 4, 32, 384, (112, 112), (8, 8)))
    args = (4, 0.1, 32 ** -0.5)
    results = []

    def forward_and_backward():
        out, lse = torch.ops.anyup_neck.window_attention_forward(q, k, v, *args, 'tiled')
        grad = torch.ones_like(out)
        results.append((out, *torch.ops.anyup_neck.window_attention_backward(
            grad, q, k, v, lse, *args, 'tiled')))

    peak = _peak_allocated_bytes(forward_and_backward, tmp_path / 'trace.json')
    out, dq, dk, dv = results[0]
    assert (dq.dtype, dk.dtype, dv.dtype) == (dtype,) * 3
    output_bytes = out.numel() * out.element_size()
    # the maps there in any case (output, its gradient, dq) take 2.33 of the bound
    assert 2.33 * output_bytes < peak <= 2.5 * output_bytes, peak / output_bytes
