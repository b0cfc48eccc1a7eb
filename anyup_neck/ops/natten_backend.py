"""Optional backend ``'natten'``: an approximation of the op through NATTEN's neighborhood attention.

NATTEN (``pip install natten``) attends from each pixel to a centred neighborhood of the *same*
map, shifted (not clamped) at borders. To use it for this op's cross-attention between maps of
different sizes, keys and values are nearest-upsampled to the output size and attended with a
dilation of about H/h, so that a (2 * ceil(r * h) + 1)^2 neighborhood visits distinct keys. So the windows differ from the exact
rule of :mod:`anyup_neck.ops.windows` (size, centring, borders); only ``window_ratio=0`` with
integer scale factors reproduces the op (every key, each repeated equally often). Values are
split into heads of the query head width (C zero-padded to a multiple of d) because NATTEN's
portable backend needs equal widths. Memory is O(N * C * H * W); natten 0.21.7 without its
compiled library runs the forward only, and slowly (flex attention in eager mode). It is here for
comparisons, never chosen by ``'auto'``.
"""
from __future__ import annotations

import math
from importlib.util import find_spec

import torch
import torch.nn.functional as F


def available() -> bool:
    """True when the natten package can be imported."""
    return find_spec('natten') is not None


def _kernel_and_dilation(out_len: int, in_len: int, window_ratio: float) -> tuple[int, int]:
    """Neighborhood size (odd, in keys) and dilation (in output pixels) along one axis."""
    dilation = max(1, out_len // in_len)
    if window_ratio == 0:
        kernel = in_len
    else:
        kernel = min(in_len, 2 * math.ceil(window_ratio * in_len) + 1)
    kernel = min(kernel, out_len // dilation)
    if kernel % 2 == 0:  # NATTEN needs odd sizes, except a kernel spanning the whole map
        kernel = kernel if kernel * dilation == out_len else kernel - 1
    return max(kernel, 1), dilation


def window_attention_natten(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int,
                            window_ratio: float, scale: float) -> torch.Tensor:
    """Approximate window attention with NATTEN (see the module docstring); (B, C, H, W)."""
    from natten.functional import na2d

    B, D, H, W = q.shape
    C, h, w = v.shape[1:]
    d = D // num_heads
    if d < 8 or d > 512 or d & (d - 1):
        raise ValueError(f"num_heads: backend 'natten' needs a head width (channels / num_heads) "
                         f'that is a power of two in [8, 512], got {D} / {num_heads} = {d}')
    groups = math.ceil(C / d)  # value heads of width d
    kernel_h, dil_h = _kernel_and_dilation(H, h, window_ratio)
    kernel_w, dil_w = _kernel_and_dilation(W, w, window_ratio)
    k_up = F.interpolate(k, size=(H, W), mode='nearest')
    v_up = F.interpolate(F.pad(v, (0, 0, 0, 0, 0, groups * d - C)), size=(H, W), mode='nearest')

    def heads_last(x: torch.Tensor, heads: int) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).reshape(B, H, W, heads, d)

    # Head (n, g): query/key head n against value group g; all pairs in one call.
    qh = heads_last(q, num_heads).repeat_interleave(groups, dim=3)
    kh = heads_last(k_up, num_heads).repeat_interleave(groups, dim=3)
    vh = heads_last(v_up, groups).repeat(1, 1, 1, num_heads, 1)
    out = na2d(qh.contiguous(), kh.contiguous(), vh.contiguous(),
               kernel_size=(kernel_h, kernel_w), dilation=(dil_h, dil_w), scale=scale)
    out = out.reshape(B, H, W, num_heads, groups * d).mean(dim=3)[..., :C]
    return out.permute(0, 3, 1, 2).contiguous()
