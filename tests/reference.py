"""Independent, straightforward AnyUp written from DESIGN.md, for the equivalence tests.

Deliberately naive: a dense masked (H*W) x (h*w) attention, the LFU response stack built at
once, numpy for the window rule, functional ops on a raw state_dict. Run it in float64.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def window_allowed(H: int, W: int, h: int, w: int, ratio: float) -> torch.Tensor:
    """(H*W, h*w) bool mask from the float32 window rule, evaluated with numpy."""
    if ratio == 0:
        return torch.ones(H * W, h * w, dtype=torch.bool)

    def bounds(n_out, n_in):
        centre = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) / np.float32(n_out)
        lo = np.clip(centre - np.float32(ratio), np.float32(0), np.float32(1)) * np.float32(n_in)
        hi = np.clip(centre + np.float32(ratio), np.float32(0), np.float32(1)) * np.float32(n_in)
        return np.floor(lo).astype(np.int64), np.ceil(hi).astype(np.int64)

    r0, r1 = bounds(H, h)
    c0, c1 = bounds(W, w)
    mask = np.zeros((H, W, h, w), dtype=bool)
    for i in range(H):
        for j in range(W):
            mask[i, j, r0[i]:r1[i], c0[j]:c1[j]] = True
    return torch.from_numpy(mask.reshape(H * W, h * w))


def dense_attention(q, k, v, num_heads, ratio, scale=None):
    """q (B, D, H, W), k (B, D, h, w), v (B, C, h, w): head-averaged masked softmax."""
    B, D, H, W = q.shape
    h, w = k.shape[-2:]
    d = D // num_heads
    scale = 1 / math.sqrt(d) if scale is None else scale
    qf = q.flatten(2).transpose(1, 2).reshape(B, H * W, num_heads, d).transpose(1, 2)
    kf = k.flatten(2).transpose(1, 2).reshape(B, h * w, num_heads, d).transpose(1, 2)
    logits = qf @ kf.transpose(-1, -2) * scale
    allowed = window_allowed(H, W, h, w, ratio).to(q.device)
    logits = torch.where(allowed, logits, torch.tensor(float('-inf'), dtype=q.dtype))
    attn = torch.softmax(logits, dim=-1).mean(dim=1)
    out = attn @ v.flatten(2).transpose(1, 2)
    return out.transpose(1, 2).reshape(B, -1, H, W)


def _resblock(x, sd, prefix):
    def gn(t, i):
        return F.group_norm(t, 8, sd[f'{prefix}.block.{i}.weight'], sd[f'{prefix}.block.{i}.bias'])
    w2, w5 = sd[f'{prefix}.block.2.weight'], sd[f'{prefix}.block.5.weight']
    y = F.conv2d(F.silu(gn(x, 0)), w2)
    y = F.conv2d(F.silu(gn(y, 3)), w5)
    return y + x


def _encoder(x, sd, prefix):
    return _resblock(_resblock(x, sd, f'{prefix}.1'), sd, f'{prefix}.2')


def _lfu(feats, basis, mode):
    B, C, h, w = feats.shape
    M, _, k, _ = basis.shape
    p = k // 2
    x = F.conv2d(F.pad(feats, (p, p, p, p)), basis.repeat(C, 1, 1, 1), groups=C)  # i*M + j
    ones = torch.ones(1, 1, h + 2 * p, w + 2 * p, dtype=feats.dtype)
    ones[..., :p, :] = 0
    ones[..., h + p:, :] = 0
    ones[..., :, :p] = 0
    ones[..., :, w + p:] = 0
    x = x / F.conv2d(ones, torch.ones(1, 1, k, k, dtype=feats.dtype))
    if mode == 'official':
        return torch.softmax(x.view(B, M, C, h, w), dim=1).mean(dim=2)
    return torch.softmax(x.view(B, C, M, h, w), dim=2).mean(dim=1)


def _rope(x, freqs):
    B, D, H, W = x.shape
    ys = torch.linspace(0, 1, H, dtype=x.dtype)
    xs = torch.linspace(0, 1, W, dtype=x.dtype)
    coords = torch.stack(torch.meshgrid(ys, xs, indexing='ij'), -1).reshape(H * W, 2)
    angle = (coords @ freqs).t().reshape(1, D, H, W)
    x1, x2 = x[:, :D // 2], x[:, D // 2:]
    return x * torch.cos(angle) + torch.cat([-x2, x1], 1) * torch.sin(angle)


def _rms(x, weight):
    eps = torch.finfo(x.dtype).eps
    return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + eps) * weight.view(1, -1, 1, 1)


def reference_anyup(sd, image, feats, output_size, num_heads=4, ratio=0.1, mode='official'):
    """The whole model on a state_dict ``sd`` (all tensors of one dtype)."""
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
