"""Bad input raises a clear error from Python (naming the argument, expected and actual values)
before any kernel runs; unavailable backends say why and how to get them."""
from __future__ import annotations

import pytest
import torch

from anyup_neck.ops import BACKENDS, window_attention
from anyup_neck.ops import extension

Q = torch.randn(1, 8, 6, 5)
K = torch.randn(1, 8, 3, 4)
V = torch.randn(1, 3, 3, 4)


@pytest.mark.parametrize('q,k,v,kwargs,error,pattern', [
    (Q, torch.randn(1, 6, 3, 4), V, {}, ValueError,
     r'k: expected batch and channels \(B, N\*d\) = \(1, 8\) like q, got \(1, 6\)'),
    (Q, torch.randn(2, 8, 3, 4), V, {}, ValueError, r'k: expected .* \(1, 8\) like q, got \(2, 8\)'),
    (Q, K, torch.randn(1, 3, 4, 4), {}, ValueError,
     r'v: expected batch 1 and spatial size \(3, 4\) like k, got shape \(1, 3, 4, 4\)'),
    (Q, K, V, {'num_heads': 3}, ValueError,
     'num_heads: expected a divisor of the q/k channels 8, got 3'),
    (Q, K, V, {'num_heads': 0}, ValueError, 'num_heads: expected a positive int, got 0'),
    (Q, K, V, {'num_heads': 2.0}, ValueError, 'num_heads: expected a positive int, got 2.0'),
    (Q, K, V, {'window_ratio': 1.5}, ValueError, r'window_ratio: expected a number in \[0, 1\], got 1.5'),
    (Q, K, V, {'window_ratio': -0.1}, ValueError, r'window_ratio: expected .* got -0.1'),
    (Q, K, V, {'window_ratio': float('nan')}, ValueError, r'window_ratio: expected .* got nan'),
    (Q, K.double(), V, {}, TypeError,
     'q, k, v: expected one dtype, got q torch.float32, k torch.float64, v torch.float32'),
    (Q, K, V.to('meta'), {}, ValueError, 'q, k, v: expected one device, got q cpu, k cpu, v meta'),
    (Q.long(), K, V, {}, TypeError, 'q: expected a floating-point dtype, got torch.int64'),
    (Q[0], K, V, {}, ValueError, r'q: expected a 4-D tensor \(B, C, H, W\), got shape \(8, 6, 5\)'),
    (Q, K, V[:, :0], {}, ValueError, 'v: expected non-empty dimensions'),
    (Q.numpy(), K, V, {}, TypeError, 'q: expected a torch.Tensor, got ndarray'),
    (Q, K, V, {'backend': 'fast'}, ValueError, "backend: expected one of .*'auto'.*'torch'.*got 'fast'"),
])
def test_bad_input_raises_before_the_kernel(q, k, v, kwargs, error, pattern):
    kwargs = {'num_heads': 2, 'window_ratio': 0.1, 'backend': 'cpp', **kwargs}
    with pytest.raises(error, match=pattern):
        window_attention(q, k, v, **kwargs)


@pytest.mark.skipif(not extension.available(), reason='needs the compiled extension')
@pytest.mark.parametrize('q,k,v,num_heads,error,pattern', [
    (Q.half(), K.half(), V.half(), 2, TypeError,
     "q, k, v: expected one of float32, float64 for backend 'cpp', got torch.float16"),
    (torch.randn(1, 65, 2, 2), torch.randn(1, 65, 2, 2), torch.randn(1, 1, 2, 2), 65, ValueError,
     "num_heads: expected at most 64 for backend 'cpp', got 65"),
])
def test_compiled_backend_limits(q, k, v, num_heads, error, pattern):
    with pytest.raises(error, match=pattern):
        window_attention(q, k, v, num_heads=num_heads, window_ratio=0.1, backend='cpp')


@pytest.mark.skipif('cuda' in BACKENDS, reason='CUDA kernels are built here')
@pytest.mark.parametrize('backend', ['cuda', 'cuda_tiled'])
def test_missing_cuda_backend_says_how_to_build_it(backend):
    with pytest.raises(ValueError, match=f"backend: '{backend}' is not available: .*CUDA_HOME"):
        window_attention(Q, K, V, num_heads=2, window_ratio=0.1, backend=backend)


@pytest.mark.skipif('natten' in BACKENDS, reason='natten is installed here')
def test_missing_natten_backend_says_how_to_install_it():
    with pytest.raises(ValueError, match="backend: 'natten' is not available: .*pip install natten"):
        window_attention(Q, K, V, num_heads=2, window_ratio=0.1, backend='natten')


@pytest.mark.skipif(not extension.available(), reason='needs the compiled extension')
def test_kernel_checks_direct_op_calls():
    """Calls that bypass the Python checks still get an error, not a crash."""
    with pytest.raises(RuntimeError, match='num_heads must divide 8'):
        torch.ops.anyup_neck.window_attention_forward(Q, K, V, 3, 0.1, 1.0)
    with pytest.raises(RuntimeError, match='v must have q.s batch and k.s spatial size'):
        torch.ops.anyup_neck.window_attention_forward(Q, K, V[:, :, :2], 2, 0.1, 1.0)


@pytest.mark.skipif(not extension.available(), reason='needs the compiled extension')
@pytest.mark.parametrize('kernels', ['fast', 'per_pixel'])
def test_cpu_kernels_name_the_dtypes_they_take(kernels):
    """Half precision runs on the CPU only in the tiled kernels' emulation (tests)."""
    q, k, v = (t.bfloat16() for t in (Q, K, V))
    with pytest.raises(RuntimeError, match=r'expected float32 or float64, got BFloat16 \(float16 '
                                           r'and bfloat16 only with the tiled'):
        torch.ops.anyup_neck.window_attention_forward(q, k, v, 2, 0.1, 0.5, kernels)
