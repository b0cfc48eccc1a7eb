"""Pure-PyTorch implementations of window attention.

* :func:`window_attention_tiled` is the portable backend: the output is cut into tiles, each
  tile gathers only the key rectangle that covers its pixels' windows, and tiles are processed
  in chunks of bounded size. Nothing of size (H*W) x (h*w) is formed, so very large outputs run
  in bounded memory. Autograd differentiates it like any PyTorch code.
* :func:`window_attention_dense` builds the full masked (H*W) x (h*w) attention, the
  straightforward formulation. It is kept as the test reference and the benchmark baseline only.

Both take projected queries q (B, N*d, H, W), keys k (B, N*d, h, w), values v (B, C, h, w) and
return (B, C, H, W): per head a scaled dot product and softmax over the window, the weights
averaged over heads, applied to the raw values.
"""
from __future__ import annotations

import math

import torch

from .windows import window_bounds_1d, window_mask

# Upper bound on the number of elements of one chunk's logits or gathered values.
_CHUNK_ELEMENTS = 1 << 24


def window_attention_dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int,
                           window_ratio: float, scale: float) -> torch.Tensor:
    """Dense masked attention (memory O(H*W*h*w)); the reference formulation."""
    B, D, H, W = q.shape
    h, w = k.shape[-2:]
    d = D // num_heads
    qh = q.reshape(B, num_heads, d, H * W).transpose(-1, -2)        # (B, N, HW, d)
    kh = k.reshape(B, num_heads, d, h * w)                           # (B, N, d, hw)
    logits = torch.matmul(qh, kh) * scale                            # (B, N, HW, hw)
    allowed = window_mask((H, W), (h, w), window_ratio, q.device)
    logits = logits.masked_fill(~allowed, float('-inf'))
    weights = logits.softmax(dim=-1).mean(dim=1)                     # (B, HW, hw)
    out = torch.matmul(weights, v.reshape(B, v.shape[1], h * w).transpose(1, 2))
    return out.transpose(1, 2).reshape(B, v.shape[1], H, W)


def _span_bound(out_len: int, in_len: int, tile: int, window_ratio: float) -> int:
    """An upper bound (at most two more) of the widest key span over the tiles of ``tile``
    consecutive output pixels along an axis, from the window rule in real numbers, as a Python
    int: the tiles' shapes then never depend on tensor values (no wait for the GPU, and
    ``torch.compile`` traces one graph).

    A tile with first and last pixels i0, i1 (centres c0, c1) has span stop(i1) - start(i0) <
    (min(c1 + r, 1) - max(c0 - r, 0)) h + 2, an integer, so at most the ceiling of that real
    width plus one. The float32 rounding of the rule is covered by a 1e-6 relative margin.
    """
    if window_ratio == 0:
        return in_len
    widest = 0.0
    for first in range(0, out_len, tile):
        last = min(first + tile, out_len) - 1
        hi = min((last + 0.5) / out_len + window_ratio, 1.0)
        lo = max((first + 0.5) / out_len - window_ratio, 0.0)
        widest = max(widest, (hi - lo) * in_len)
    return min(in_len, math.ceil(widest * (1 + 1e-6) + 1e-6) + 1)


def _tile_key_ranges(out_len: int, in_len: int, tile: int, window_ratio: float, device):
    """Per tile along one axis: key indices to gather and the per-pixel validity mask.

    Returns (index (T, K) int64 clamped into range, valid (T, tile, K) bool, T) where
    T = ceil(out_len / tile) and K = :func:`_span_bound`; keys past a tile's span are masked.
    """
    start, stop = window_bounds_1d(out_len, in_len, window_ratio, device)
    num_tiles = math.ceil(out_len / tile)
    pad = num_tiles * tile - out_len
    # Padded pixels repeat the last real window, so no row of logits is fully masked.
    start = torch.cat([start, start[-1:].expand(pad)]).view(num_tiles, tile)
    stop = torch.cat([stop, stop[-1:].expand(pad)]).view(num_tiles, tile)
    # Window bounds are monotone in the pixel index: a tile's span runs from its first
    # pixel's start to its last pixel's stop.
    span = _span_bound(out_len, in_len, tile, window_ratio)
    keys = start[:, :1] + torch.arange(span, device=device)          # (T, K)
    valid = (keys[:, None, :] >= start[:, :, None]) & (keys[:, None, :] < stop[:, :, None])
    return keys.clamp(max=in_len - 1), valid, num_tiles


def _tile_size(out_len: int, in_len: int) -> int:
    """Output pixels per tile side: about one key cell, at least 4, at most 32."""
    return max(4, min(32, math.ceil(out_len / in_len)))


def window_attention_tiled(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int,
                           window_ratio: float, scale: float) -> torch.Tensor:
    """Tiled window attention in bounded memory (see module docstring)."""
    B, D, H, W = q.shape
    C, h, w = v.shape[1:]
    d = D // num_heads
    th, tw = _tile_size(H, h), _tile_size(W, w)
    rows, row_valid, Tr = _tile_key_ranges(H, h, th, window_ratio, q.device)
    cols, col_valid, Tc = _tile_key_ranges(W, w, tw, window_ratio, q.device)
    KH, KW = rows.shape[1], cols.shape[1]

    # Gather columns once (small), rows per chunk.
    k_cols = k.view(B, num_heads, d, h, w)[..., cols]                 # (B, N, d, h, Tc, KW)
    v_cols = v[..., cols]                                             # (B, C, h, Tc, KW)
    # Which keys each pixel may see, as additive 0/-inf biases per axis, broadcast inside
    # the logits instead of materialising a (Tr, Tc, th*tw, KH*KW) mask.
    neg_inf = torch.full((), float('-inf'), dtype=q.dtype, device=q.device)
    zero = torch.zeros((), dtype=q.dtype, device=q.device)
    row_bias = torch.where(row_valid, zero, neg_inf)[:, None, None, :, None, :, None]
    col_bias = torch.where(col_valid, zero, neg_inf)[None, :, None, None, :, None, :]

    per_tile_row = B * Tc * th * tw * KH * KW * max(num_heads, 1) + B * Tc * KH * KW * C
    chunk = max(1, _CHUNK_ELEMENTS // max(per_tile_row, 1))
    firsts = range(0, Tr, chunk)
    # Without autograd a chunk's keys and values are gathered when it runs and its output is
    # written into the output's final layout: memory is bounded by the chunk. Under autograd
    # the keys and values are gathered once and split, the queries split, and the outputs
    # joined by one cat, so that the backwards write each gradient once: per-chunk gathers,
    # slices of q and writes into a preallocated output make autograd build, add and copy a
    # full-size gradient once per chunk (at 448 from 32, C = 384, batch 4, in 33 chunks: 231 GB
    # of traffic instead of 37, growing with the square of the batch; the gathers held at once
    # take 0.2 GB per image there).
    recording = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    out = None if recording else q.new_empty(B, C, Tr, th, Tc, tw)
    pieces = []
    q_rows = torch.split(q, [min(H, (t0 + chunk) * th) - t0 * th for t0 in firsts], dim=2)
    if recording:
        k_rows = k_cols[:, :, :, rows].split(chunk, dim=3)
        v_rows = v_cols[:, :, rows].split(chunk, dim=2)
    else:
        k_rows = (k_cols[:, :, :, rows[t0:t0 + chunk]] for t0 in firsts)
        v_rows = (v_cols[:, :, rows[t0:t0 + chunk]] for t0 in firsts)
    for t0, qc, kc, vc in zip(firsts, q_rows, k_rows, v_rows):
        t1 = min(Tr, t0 + chunk)
        # kc (B, N, d, t, KH, Tc, KW), vc (B, C, t, KH, Tc, KW)
        kc = kc.permute(0, 3, 5, 1, 2, 4, 6).reshape(B, t1 - t0, Tc, num_heads, d, KH * KW)
        kc = kc * scale                      # scaled here, on the keys, not on the logits
        # This chunk's queries as (B, t, Tc, N, th*tw, d), zero-padded to whole tiles (a pad
        # copies even when it adds nothing).
        padding = (0, Tc * tw - W, 0, (t1 - t0) * th - qc.shape[2])
        if any(padding):
            qc = torch.nn.functional.pad(qc, padding)
        qc = qc.reshape(B, num_heads, d, t1 - t0, th, Tc, tw).permute(0, 3, 5, 1, 4, 6, 2)
        qc = qc.reshape(B, t1 - t0, Tc, num_heads, th * tw, d)
        logits = torch.matmul(qc, kc).view(B, t1 - t0, Tc, num_heads, th, tw, KH, KW)
        # One pass over the logits adds both axes' masks, whose sum has no batch or head
        # dimension; in place where autograd does not record it.
        bias = row_bias[t0:t1] + col_bias                             # (t, Tc, 1, th, tw, KH, KW)
        logits = logits + bias if logits.requires_grad else logits.add_(bias)
        weights = logits.view(B, t1 - t0, Tc, num_heads, th * tw, KH * KW)
        weights = weights.softmax(dim=-1).mean(dim=3)                 # (B, t, Tc, P, K)
        # Channels before pixels, so the copies into the output's layout move runs of tw
        # pixels and the values' copy runs of KW keys, not single values.
        vc = vc.permute(0, 2, 4, 1, 3, 5).reshape(B, t1 - t0, Tc, C, KH * KW)
        tile_out = torch.matmul(vc, weights.mT)                       # (B, t, Tc, C, P)
        piece = tile_out.view(B, t1 - t0, Tc, C, th, tw).permute(0, 3, 1, 4, 2, 5)
        if recording:
            pieces.append(piece)
        else:
            out[:, :, t0:t1] = piece
    out = (torch.cat(pieces, dim=2) if recording else out).view(B, C, Tr * th, Tc * tw)
    return out if (Tr * th, Tc * tw) == (H, W) else out[:, :, :H, :W].contiguous()
