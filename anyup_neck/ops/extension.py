"""The compiled window-attention op and its torch.library registrations.

Importing this module loads the extension built by ``setup.py`` (``anyup_neck/ops/_C*.so``),
whose C++ code (csrc/: common/ the schema and the math shared by CPU and CUDA, cpu/, cuda/)
defines the ops

    torch.ops.anyup_neck.window_attention_forward(q, k, v, num_heads, window_ratio, scale,
                                                  kernels='auto') -> (out, lse)
    torch.ops.anyup_neck.window_attention_backward(grad_out, q, k, v, lse, num_heads,
                                                   window_ratio, scale, kernels='auto')
        -> (dq, dk, dv)

with CPU kernels (float32/float64) and, when built with CUDA, CUDA kernels (float32, float16,
bfloat16, float64). Here they get their fake (shape-only) kernels, so ``torch.compile`` and meta
tensors work, and the autograd formula (the backward op, called with the forward's ``kernels``),
so gradients and ``gradcheck`` work. The fused ops with CUDA kernels (``affine_silu``,
``group_norm_coefficients``, ``affine_silu_grad_sums``, ``group_norm_silu_input_grad``,
``rotary_2d_``; see :mod:`anyup_neck.ops.fused`) get their fake kernels here too. ``lse`` (B, N,
H, W) is the per-pixel, per-head log-sum-exp the backward recomputes the weights from; it is
float32, or float64 for float64 inputs.

``kernels`` is private (users keep ``'auto'``, the device's default; the tests name the others,
see :data:`KERNELS`). The CPU kernels' instruction set is the widest the processor supports, or
the one ``ANYUP_NECK_CPU_ISA`` (base, avx2, avx512) names, read once when they first run;
:func:`cpu_isa` switches it for a block of code (tests).

If the extension is missing, :data:`LOAD_ERROR` says why and nothing is registered.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

BUILD_HINT = ('build it with `pip install --no-build-isolation -e .` (or `python setup.py '
              'build_ext --inplace`) in the anyup_neck repository')

try:
    from . import _C  # noqa: F401  (loading registers the ops)
    LOAD_ERROR: str | None = None
except ImportError as error:  # not built, or built against another torch
    LOAD_ERROR = f'{type(error).__name__}: {error}'

CPU_DTYPES = (torch.float32, torch.float64)
CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

#: Values of the ops' private ``kernels`` argument: 'auto' (the device's default); 'fast'
#: (CPU only, its default: 16 pixels per SIMD register); 'per_pixel' (the per-pixel math shared
#: with CUDA, CUDA's default; on the CPU run pixel by pixel so that tests exercise it); 'tiled'
#: (the tiled CUDA kernels of csrc/common/window_tiles.h, backend 'cuda_tiled'; on the CPU
#: their block code emulated thread by thread between the barriers, for the tests);
#: 'tiled_racecheck' (CPU only: 'tiled' with each phase's threads and each launch's blocks in
#: reverse order, blocks one at a time; every shared-memory word changed by at most one thread
#: of a phase and every output element by at most one block of a launch, else an error: a
#: race check; it must give the same bits as 'tiled').
KERNELS = ('auto', 'fast', 'per_pixel', 'tiled', 'tiled_racecheck')

_FORWARD = 'anyup_neck::window_attention_forward'
_BACKWARD = 'anyup_neck::window_attention_backward'

#: Largest head count of the compiled kernels (their per-query scratch), read from them.
MAX_HEADS: int | None = torch.ops.anyup_neck._max_heads() if LOAD_ERROR is None else None


def available() -> bool:
    """True when the compiled op (with its CPU kernels) is loaded."""
    return LOAD_ERROR is None


def has_cuda_kernels() -> bool:
    """True when the loaded extension was built with its CUDA kernels."""
    return available() and torch._C._dispatch_has_kernel_for_dispatch_key(_FORWARD, 'CUDA')


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@contextlib.contextmanager
def cpu_isa(isa: str) -> Iterator[None]:
    """Run the CPU kernels built for ``isa`` ('base', 'avx2', 'avx512' or 'auto', the widest
    supported) inside the block; the previous selection is restored on exit. Raises
    RuntimeError ('... does not support ...') when the processor lacks ``isa``."""
    if not available():
        raise RuntimeError(f'the compiled extension is not built: {LOAD_ERROR}; {BUILD_HINT}')
    previous = torch.ops.anyup_neck._cpu_isa()
    torch.ops.anyup_neck._set_cpu_isa(isa)
    try:
        yield
    finally:
        torch.ops.anyup_neck._set_cpu_isa(previous)


def _forward_fake(q, k, v, num_heads, window_ratio, scale, kernels='auto'):
    B, _, H, W = q.shape
    out = q.new_empty((B, v.shape[1], H, W))
    lse = q.new_empty((B, num_heads, H, W), dtype=_acc_dtype(q.dtype))
    return out, lse


def _backward_fake(grad_out, q, k, v, lse, num_heads, window_ratio, scale, kernels='auto'):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, num_heads, window_ratio, scale, kernels = inputs
    ctx.save_for_backward(q, k, v, output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.params = (num_heads, window_ratio, scale, kernels)


def _backward(ctx, grad_out, _grad_lse):
    q, k, v, lse = ctx.saved_tensors
    dq, dk, dv = torch.ops.anyup_neck.window_attention_backward(grad_out, q, k, v, lse,
                                                                *ctx.params)
    return dq, dk, dv, None, None, None, None


def _in_place_fake(*args) -> None:
    """Fake kernel of an op that only writes into one of its arguments."""


def _group_norm_coefficients_fake(x, weight, bias, groups, eps):
    acc = _acc_dtype(x.dtype)
    per_channel, per_group = (x.shape[0], x.shape[1]), (x.shape[0], groups)
    return (x.new_empty(per_channel, dtype=acc), x.new_empty(per_channel, dtype=acc),
            x.new_empty(per_group, dtype=acc), x.new_empty(per_group, dtype=acc))


def _affine_silu_grad_sums_fake(x, grad, scale, shift, center):
    return x.new_empty((x.shape[0], 2, x.shape[1]), dtype=_acc_dtype(x.dtype))


def _group_norm_silu_input_grad_fake(x, grad, scale, shift, coef_g, coef_x, coef, center,
                                     residual=None):
    return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)


if available():
    torch.library.register_fake(_FORWARD, _forward_fake)
    torch.library.register_fake(_BACKWARD, _backward_fake)
    torch.library.register_fake('anyup_neck::affine_silu', _in_place_fake)
    torch.library.register_fake('anyup_neck::rotary_2d_', _in_place_fake)
    torch.library.register_fake('anyup_neck::group_norm_coefficients',
                                _group_norm_coefficients_fake)
    torch.library.register_fake('anyup_neck::affine_silu_grad_sums', _affine_silu_grad_sums_fake)
    torch.library.register_fake('anyup_neck::group_norm_silu_input_grad',
                                _group_norm_silu_input_grad_fake)
    torch.library.register_autograd(_FORWARD, _backward, setup_context=_setup_context)


def _check_backend(backend: str, q: torch.Tensor, device_type: str, dtypes: tuple,
                   num_heads: int) -> None:
    if q.device.type not in (device_type, 'meta'):  # meta tensors run the fake kernel
        raise ValueError(f"q, k, v: expected {device_type} tensors for backend '{backend}', "
                         f'got {q.device}')
    if q.dtype not in dtypes:
        names = ', '.join(str(d).replace('torch.', '') for d in dtypes)
        raise TypeError(f"q, k, v: expected one of {names} for backend '{backend}', got {q.dtype}")
    if num_heads > MAX_HEADS:
        raise ValueError(f"num_heads: expected at most {MAX_HEADS} for backend '{backend}', "
                         f'got {num_heads}')


def _compiled_backend(backend: str, device_type: str, dtypes: tuple, kernels: str = 'auto'):
    """The backend function ``backend`` ('cpp', 'cuda', 'cuda_tiled') of :data:`BACKENDS`."""

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int,
            window_ratio: float, scale: float) -> torch.Tensor:
        _check_backend(backend, q, device_type, dtypes, num_heads)
        return torch.ops.anyup_neck.window_attention_forward(q, k, v, num_heads, window_ratio,
                                                             scale, kernels)[0]

    run.__name__ = run.__qualname__ = f'window_attention_{backend}'
    run.__doc__ = (f'The compiled op on {device_type} tensors (kernels={kernels!r}); returns '
                   f'(B, C, H, W) contiguous.')
    return run


window_attention_cpp = _compiled_backend('cpp', 'cpu', CPU_DTYPES)
window_attention_cuda = _compiled_backend('cuda', 'cuda', CUDA_DTYPES)
window_attention_cuda_tiled = _compiled_backend('cuda_tiled', 'cuda', CUDA_DTYPES, 'tiled')
