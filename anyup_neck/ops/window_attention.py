"""``window_attention``: the one entry point every caller (models, benchmarks, tests) uses.

    out = window_attention(q, k, v, num_heads=4, window_ratio=0.1)

q (B, N*d, H, W) projected queries, k (B, N*d, h, w) projected keys, v (B, C, h, w) values with
any C; out (B, C, H, W). Each output pixel attends to the keys inside its window (rule in
:mod:`anyup_neck.ops.windows`); per head a scaled dot product (scale defaults to 1/sqrt(d)) and
softmax, the weights averaged over heads, applied to v.

Backends are looked up by name in :data:`BACKENDS`; ``'auto'`` is resolved by
:func:`resolve_backend`, the single place that decides which implementation runs:

* ``'cuda'``: the compiled CUDA kernels, one thread per output pixel or key (CUDA tensors;
  float32/16, bfloat16, float64);
* ``'cuda_tiled'``: the compiled tiled CUDA kernels (8x8 tiles of output pixels, the work as
  register-tiled matrix products through shared memory; same dtypes). Their tile logic is
  tested on the CPU, but they have not run on a GPU yet, so nothing picks them automatically;
* ``'cpp'``: the compiled C++ kernels (CPU tensors; float32, float64);
* ``'torch'``: tiled pure PyTorch, any device and dtype, autograd by PyTorch;
* ``'dense'``: the dense masked formulation (reference and baseline);
* ``'natten'``: optional, an approximation through NATTEN's neighborhood attention with other
  windows (see :mod:`anyup_neck.ops.natten_backend`); only when natten is installed.

``'auto'`` picks the fastest correct backend for the device (see :func:`resolve_backend`): on
CPU tensors ``'cpp'`` for float32/float64 (``'torch'`` for other dtypes, warning once when the
extension is missing); on CUDA tensors ``'torch'``.

Under ``torch.autocast`` the op runs in the dtype autocast gives it on the device (q, k, v cast
to it; every backend accumulates in float32 or float64) and returns v's original dtype: on CUDA
the autocast dtype, on the CPU float32 (its C++ kernels have no bfloat16 or float16; float64
stays float64).
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

import torch

from . import extension, natten_backend
from .torch_backend import window_attention_dense, window_attention_tiled

BackendFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, float, float], torch.Tensor]

#: name -> implementation with signature fn(q, k, v, num_heads, window_ratio, scale).
BACKENDS: dict[str, BackendFn] = {
    'torch': window_attention_tiled,
    'dense': window_attention_dense,
}
if extension.available():
    BACKENDS['cpp'] = extension.window_attention_cpp
if extension.has_cuda_kernels():
    BACKENDS['cuda'] = extension.window_attention_cuda
    BACKENDS['cuda_tiled'] = extension.window_attention_cuda_tiled
if natten_backend.available():
    BACKENDS['natten'] = natten_backend.window_attention_natten

_warned: set[str] = set()


def register_backend(name: str, fn: BackendFn) -> None:
    """Make ``fn`` selectable as ``backend=name``."""
    BACKENDS[name] = fn


def _unavailable_reason(name: str) -> str:
    """Why the optional backend ``name`` is not in :data:`BACKENDS`."""
    if name == 'natten':
        return 'the natten package is not installed (`pip install natten`)'
    if not extension.available():
        return (f'the compiled extension anyup_neck.ops._C is not built '
                f'({extension.LOAD_ERROR}); {extension.BUILD_HINT}')
    return ('the compiled extension was built without CUDA kernels; rebuild it with a CUDA '
            'toolkit (CUDA_HOME, TORCH_CUDA_ARCH_LIST; see anyup_neck/ops/build_config.py)')


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype | None = None) -> str:
    """Turn ``backend`` (possibly ``'auto'``) into the name of an available implementation.

    ``'auto'`` is the fastest correct backend for ``device`` and ``dtype``:

    * CPU: ``'cpp'`` for float32/float64 (many times faster than ``'torch'`` there), else
      ``'torch'``; ``'torch'`` with a warning (once) when the extension is not built.
    * CUDA: ``'torch'``. Measured on an H200 at 448x448 from 32x32, C = 384, 4 heads, window
      ratio 0.1, the compiled per-pixel CUDA kernels (``'cuda'``) are slower than the tiled
      PyTorch backend: forward 9.2 ms against 5.0 ms, forward + backward 284 ms against
      13.5 ms, batch 4 29 / 460 ms against 14 / 69 ms. ``'cuda'`` stays selectable by name,
      and so does ``'cuda_tiled'``, which has not been measured (never run on a GPU yet).
    * any other device: ``'torch'``.
    """
    if backend == 'auto':
        if device.type != 'cpu':
            return 'torch'
        if 'cpp' not in BACKENDS:
            if 'cpp' not in _warned:
                _warned.add('cpp')
                warnings.warn(f'anyup_neck: window attention falls back to the slower '
                              f'pure-PyTorch backend: {_unavailable_reason("cpp")}',
                              RuntimeWarning, stacklevel=3)
            return 'torch'
        if dtype is not None and dtype not in extension.CPU_DTYPES:
            return 'torch'
        return 'cpp'
    if backend not in BACKENDS:
        if backend in ('cpp', 'cuda', 'cuda_tiled', 'natten'):
            raise ValueError(f'backend: {backend!r} is not available: '
                             f'{_unavailable_reason(backend)}')
        raise ValueError(f"backend: expected one of {['auto', *sorted(BACKENDS)]}, got {backend!r}")
    return backend


def _check_tensor(name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f'{name}: expected a torch.Tensor, got {type(t).__name__}')
    if t.dim() != 4:
        raise ValueError(f'{name}: expected a 4-D tensor (B, C, H, W), got shape {tuple(t.shape)}')
    if not t.is_floating_point():
        raise TypeError(f'{name}: expected a floating-point dtype, got {t.dtype}')
    if t.numel() == 0:
        raise ValueError(f'{name}: expected non-empty dimensions, got shape {tuple(t.shape)}')
    return t


def check_window_attention_args(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                num_heads: int, window_ratio: float) -> None:
    """Validate the op's arguments; every error names the argument, expected and actual."""
    for name, t in (('q', q), ('k', k), ('v', v)):
        _check_tensor(name, t)
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f'q, k, v: expected one dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}')
    if k.device != q.device or v.device != q.device:
        raise ValueError(f'q, k, v: expected one device, got q {q.device}, k {k.device}, '
                         f'v {v.device}')
    if k.shape[:2] != q.shape[:2]:
        raise ValueError(f'k: expected batch and channels (B, N*d) = {tuple(q.shape[:2])} like q, '
                         f'got {tuple(k.shape[:2])}')
    if v.shape[0] != q.shape[0] or v.shape[2:] != k.shape[2:]:
        raise ValueError(f'v: expected batch {q.shape[0]} and spatial size {tuple(k.shape[2:])} '
                         f'like k, got shape {tuple(v.shape)}')
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f'num_heads: expected a positive int, got {num_heads!r}')
    if q.shape[1] % num_heads:
        raise ValueError(f'num_heads: expected a divisor of the q/k channels {q.shape[1]}, '
                         f'got {num_heads}')
    if not isinstance(window_ratio, (int, float)) or not 0.0 <= window_ratio <= 1.0:
        raise ValueError(f'window_ratio: expected a number in [0, 1], got {window_ratio!r}')


def _autocast_dtypes(q: torch.Tensor, k: torch.Tensor,
                     v: torch.Tensor) -> tuple[torch.dtype, torch.dtype] | None:
    """Under ``torch.autocast`` on q's device: (the dtype the op runs in, the dtype it returns);
    None outside autocast. CUDA runs in the autocast dtype, the CPU in float32 (its kernels have
    no half types); float64 inputs stay float64; the result has v's dtype."""
    device_type = q.device.type
    if device_type not in ('cpu', 'cuda') or not torch.is_autocast_enabled(device_type):
        return None
    if all(t.dtype == torch.float64 for t in (q, k, v)):
        return None
    run = torch.get_autocast_dtype(device_type) if device_type == 'cuda' else torch.float32
    return run, v.dtype


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, num_heads: int,
                     window_ratio: float, scale: float | None = None,
                     backend: str = 'auto') -> torch.Tensor:
    """Windowed cross-attention with head-averaged weights; see the module docstring.

    Args:
        q: (B, N*d, H, W) projected queries.
        k: (B, N*d, h, w) projected keys.
        v: (B, C, h, w) values, any C >= 1.
        num_heads: N, must divide the q/k channels.
        window_ratio: half-size of the window as a fraction of the map, in [0, 1]; 0 = global.
        scale: logit scale, default 1/sqrt(d).
        backend: 'auto' or a key of :data:`BACKENDS`.

    Returns:
        (B, C, H, W) tensor of q's dtype; under ``torch.autocast`` of v's dtype, computed in the
        device's autocast dtype (CUDA) or float32 (CPU), see the module docstring.
    """
    for name, t in (('q', q), ('k', k), ('v', v)):
        _check_tensor(name, t)
    autocast = _autocast_dtypes(q, k, v)
    if autocast is not None:
        q, k, v = (t.to(autocast[0]) for t in (q, k, v))
    check_window_attention_args(q, k, v, num_heads, window_ratio)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[1] // num_heads)
    name = resolve_backend(backend, q.device, q.dtype)
    if autocast is None:
        return BACKENDS[name](q, k, v, num_heads, float(window_ratio), float(scale))
    with torch.autocast(q.device.type, enabled=False):  # the backends choose their precision
        out = BACKENDS[name](q, k, v, num_heads, float(window_ratio), float(scale))
    return out.to(autocast[1])
