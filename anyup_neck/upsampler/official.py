"""The official AnyUp model's formulation, written plainly: the reference and the baseline.

This is what the equivalence tests compare :class:`~anyup_neck.AnyUp` (and the ``dense``
attention backend) with, in float64, and what ``tools/benchmark.py`` measures as the official
model. It is deliberately naive and shares no code with the package's layers:

* functional, on a raw ``state_dict`` with the official parameter names (``sd`` below; every
  tensor of one dtype and on the inputs' device);
* NCHW convolutions, GroupNorm and SiLU as separate PyTorch ops, every intermediate kept
  (ResBlock: GroupNorm(8), SiLU, conv, GroupNorm(8), SiLU, conv, plus the input or, where
  the channels change, its 1x1 conv);
* the learned feature unification (LFU) builds its whole (B, C*M, h, w) response stack at once;
* the cross-attention is dense: a (H*W) x (h*w) logit matrix per head, masked outside each
  output pixel's window, softmaxed, averaged over heads and applied to the raw features.
  Memory grows as H*W*h*w, which is why the package never does this.

Numerics that must match the official model exactly:

* **window rule** (per axis; output pixel i of n_out, keys 0..n_in-1, ratio r), in float32 and
  in this order: ``centre = (i + 0.5) / n_out``, keys from ``floor(clamp(centre - r, 0, 1) *
  n_in)`` (inclusive) to ``ceil(clamp(centre + r, 0, 1) * n_in)`` (exclusive). Float64 can land
  on the other side of an integer and change a window. ``r == 0`` is a global window.
* **LFU**: each channel is convolved with every basis kernel (zero padding) and divided by the
  number of in-image taps; the (B, C*M, h, w) stack is channel-major (index c*M + m).
  ``'official'`` mode views it as (B, M, C, h, w), as the official code does, softmaxes over
  that view's first axis and averages over its second; ``'paper'`` mode views it as
  (B, C, M, h, w): a softmax over each channel's M responses, averaged over the channels.
* **RoPE**: pixel coordinates ``linspace(0, 1)`` per axis, angles ``coords @ freqs``; the
  channel halves rotate as ``x * cos + cat(-x2, x1) * sin``.
* **RMSNorm** with eps = the dtype's machine epsilon, then the attention's in-projection.

Every tensor created here is on the inputs' device, so the formulation runs on CUDA as on the
CPU, and under ``torch.autocast`` as the official model would.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

StateDict = dict[str, torch.Tensor]


def _axis_allowed(n_out: int, n_in: int, ratio: float, device: torch.device) -> torch.Tensor:
    """(n_out, n_in) bool: key j is inside output pixel i's window along one axis."""
    f32 = dict(dtype=torch.float32, device=device)
    # Tensor operands throughout: a Python divisor may become a reciprocal multiply on CUDA.
    centre = (torch.arange(n_out, **f32) + 0.5) / torch.tensor(float(n_out), **f32)
    half = torch.tensor(ratio, **f32)
    first = torch.floor(torch.clamp(centre - half, 0.0, 1.0) * n_in)
    end = torch.ceil(torch.clamp(centre + half, 0.0, 1.0) * n_in)
    key = torch.arange(n_in, **f32)
    return (key >= first[:, None]) & (key < end[:, None])


@functools.lru_cache(maxsize=8)
def window_allowed(out_size: tuple[int, int], in_size: tuple[int, int], ratio: float,
                   device: torch.device | str = 'cpu') -> torch.Tensor:
    """(H*W, h*w) bool mask, True where output pixel (i, j) may attend to key (y, x).

    Cached per sizes, ratio and device, as the official model caches its mask (a repeated
    call costs nothing; the mask stays allocated). Read-only: the cache hands out one tensor.
    """
    (H, W), (h, w) = out_size, in_size
    if ratio == 0:
        return torch.ones(H * W, h * w, dtype=torch.bool, device=device)
    rows = _axis_allowed(H, h, ratio, torch.device(device))         # (H, h)
    cols = _axis_allowed(W, w, ratio, torch.device(device))         # (W, w)
    return (rows[:, None, :, None] & cols[None, :, None, :]).reshape(H * W, h * w)


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int,
                    ratio: float, scale: float | None = None) -> torch.Tensor:
    """Head-averaged masked softmax attention.

    q (B, N*d, H, W) and k (B, N*d, h, w) projected queries and keys, v (B, C, h, w) values;
    scale defaults to 1 / sqrt(d). Returns (B, C, H, W).
    """
    B, D, H, W = q.shape
    h, w = k.shape[-2:]
    d = D // num_heads
    scale = 1 / math.sqrt(d) if scale is None else scale
    qf = q.flatten(2).transpose(1, 2).reshape(B, H * W, num_heads, d).transpose(1, 2)
    kf = k.flatten(2).transpose(1, 2).reshape(B, h * w, num_heads, d).transpose(1, 2)
    logits = qf @ kf.transpose(-1, -2) * scale                       # (B, N, HW, hw)
    allowed = window_allowed((H, W), (h, w), ratio, q.device)
    attn = torch.softmax(logits.masked_fill(~allowed, float('-inf')), dim=-1).mean(dim=1)
    out = attn @ v.flatten(2).transpose(1, 2)                        # (B, HW, C)
    return out.transpose(1, 2).reshape(B, -1, H, W)


def _resblock(x: torch.Tensor, sd: StateDict, prefix: str) -> torch.Tensor:
    def gn(t, i):
        return F.group_norm(t, 8, sd[f'{prefix}.block.{i}.weight'], sd[f'{prefix}.block.{i}.bias'])
    w2, w5 = sd[f'{prefix}.block.2.weight'], sd[f'{prefix}.block.5.weight']
    y = F.conv2d(F.silu(gn(x, 0)), w2)
    y = F.conv2d(F.silu(gn(y, 3)), w5)
    shortcut = sd.get(f'{prefix}.shortcut.weight')      # a 1x1 conv where channels change
    return y + (x if shortcut is None else F.conv2d(x, shortcut))


def _encoder(x: torch.Tensor, sd: StateDict, prefix: str) -> torch.Tensor:
    return _resblock(_resblock(x, sd, f'{prefix}.1'), sd, f'{prefix}.2')


def _lfu(feats: torch.Tensor, basis: torch.Tensor, mode: str) -> torch.Tensor:
    """feats (B, C, h, w), basis (M, 1, k, k) -> (B, M, h, w)."""
    B, C, h, w = feats.shape
    M, _, k, _ = basis.shape
    p = k // 2
    x = F.conv2d(F.pad(feats, (p, p, p, p)), basis.repeat(C, 1, 1, 1), groups=C)  # i*M + j
    inside = F.pad(feats.new_ones(1, 1, h, w), (p, p, p, p))
    x = x / F.conv2d(inside, feats.new_ones(1, 1, k, k))             # in-image taps
    if mode == 'official':
        return torch.softmax(x.view(B, M, C, h, w), dim=1).mean(dim=2)
    return torch.softmax(x.view(B, C, M, h, w), dim=2).mean(dim=1)


def _rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """x (B, D, H, W) rotated by the angles coords @ freqs (freqs (2, D))."""
    B, D, H, W = x.shape
    ys = torch.linspace(0, 1, H, dtype=freqs.dtype, device=freqs.device)
    xs = torch.linspace(0, 1, W, dtype=freqs.dtype, device=freqs.device)
    coords = torch.stack(torch.meshgrid(ys, xs, indexing='ij'), -1).reshape(H * W, 2)
    angle = (coords @ freqs).t().reshape(1, D, H, W)
    x1, x2 = x[:, :D // 2], x[:, D // 2:]
    return x * torch.cos(angle) + torch.cat([-x2, x1], 1) * torch.sin(angle)


def _rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    eps = torch.finfo(x.dtype).eps
    return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + eps) * weight.view(1, -1, 1, 1)


def official_anyup(sd: StateDict, image: torch.Tensor, feats: torch.Tensor,
                   output_size: tuple[int, int], num_heads: int = 4, ratio: float = 0.1,
                   mode: str = 'official') -> torch.Tensor:
    """The whole model: image (B, 3, H_img, W_img) ImageNet-normalised, feats (B, C, h, w)
    -> (B, C, *output_size). ``sd`` is an AnyUp state_dict (official parameter names);
    ``ratio`` the window ratio, ``mode`` the LFU mode ('official' or 'paper')."""
    D = sd['image_encoder.0.weight'].shape[0]
    enc = _encoder(F.conv2d(image, sd['image_encoder.0.weight']), sd, 'image_encoder')
    enc = _rope(enc, sd['rope.freqs'])
    q = _encoder(F.conv2d(enc, sd['query_encoder.0.weight']), sd, 'query_encoder')
    q = F.adaptive_avg_pool2d(q, output_size)
    q = F.conv2d(q, sd['cross_decode.conv2d.weight'], padding=1)
    k = _encoder(F.conv2d(enc, sd['key_encoder.0.weight']), sd, 'key_encoder')
    k = F.adaptive_avg_pool2d(k, feats.shape[-2:])
    unified = _lfu(feats / feats.norm(dim=1, keepdim=True).clamp_min(1e-12),
                   sd['key_features_encoder.0.basis'], mode)
    k = torch.cat([k, _encoder(unified, sd, 'key_features_encoder')], 1)
    agg = F.conv2d(F.pad(k, (1, 1, 1, 1), mode='reflect'), sd['aggregation.0.weight'])
    k = _encoder(agg, sd, 'aggregation')
    prefix = 'cross_decode.cross_attn.'
    q = _rms(q, sd[prefix + 'norm_q.weight'])
    k = _rms(k, sd[prefix + 'norm_k.weight'])
    W, b = sd[prefix + 'attention.in_proj_weight'], sd[prefix + 'attention.in_proj_bias']
    q = torch.einsum('bchw,oc->bohw', q, W[:D]) + b[:D].view(1, -1, 1, 1)
    k = torch.einsum('bchw,oc->bohw', k, W[D:2 * D]) + b[D:2 * D].view(1, -1, 1, 1)
    return dense_attention(q, k, feats, num_heads, ratio)
