"""``window_attention``: the one entry point every caller (AnyUp, benchmarks, tests) uses.

    out = window_attention(q, k, v, num_heads=4, window_ratio=0.1)

q (B, N*d, H, W) projected queries, k (B, N*d, h, w) projected keys, v (B, C, h, w) values with
any C; out (B, C, H, W). Each output pixel attends to the keys inside its window (rule in
:mod:`anyup_neck.ops.windows`); per head a scaled dot product (scale defaults to 1/sqrt(d)) and
softmax, the weights averaged over heads, applied to v.

Backends are looked up by name in :data:`BACKENDS`; ``'auto'`` is resolved by
:func:`resolve_backend`, the single place that decides which implementation runs.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .torch_backend import window_attention_dense, window_attention_tiled

BackendFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, float, float], torch.Tensor]

#: name -> implementation with signature fn(q, k, v, num_heads, window_ratio, scale).
BACKENDS: dict[str, BackendFn] = {
    'torch': window_attention_tiled,
    'dense': window_attention_dense,
}


def register_backend(name: str, fn: BackendFn) -> None:
    """Make ``fn`` selectable as ``backend=name`` (used by the compiled kernels)."""
    BACKENDS[name] = fn


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn ``backend`` (possibly ``'auto'``) into the name of an available implementation."""
    if backend == 'auto':
        preferred = 'cuda' if device.type == 'cuda' else 'cpp'
        return preferred if preferred in BACKENDS else 'torch'
    if backend not in BACKENDS:
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
        (B, C, H, W) tensor of q's dtype.
    """
    check_window_attention_args(q, k, v, num_heads, window_ratio)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[1] // num_heads)
    name = resolve_backend(backend, q.device)
    return BACKENDS[name](q, k, v, num_heads, float(window_ratio), float(scale))
