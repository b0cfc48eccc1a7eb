"""The attention window rule shared by every backend.

An output pixel (i, j) of an H x W output attends to the keys of an h x w map inside a
rectangle centred on the pixel's normalised position. Rows and columns are independent, so the
rule is a 1-D function applied once per axis:

    centre = (i + 0.5) / H
    start  = floor(clamp(centre - r, 0, 1) * h)      (inclusive)
    stop   = ceil(clamp(centre + r, 0, 1) * h)       (exclusive)

Everything is evaluated in float32 in exactly this order, in every backend and kernel: float64
arithmetic can land on the other side of an integer and change a window. ``r == 0`` means a
global window (every key).
"""
from __future__ import annotations

import torch


def window_bounds_1d(out_len: int, in_len: int, window_ratio: float,
                     device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Window start (inclusive) and stop (exclusive) along one axis.

    Returns two int64 tensors of shape (out_len,), with 0 <= start < stop <= in_len.
    """
    if window_ratio == 0:
        start = torch.zeros(out_len, dtype=torch.long, device=device)
        return start, torch.full_like(start, in_len)
    # A tensor divisor: CUDA divides by a Python number through its reciprocal, which can round
    # the centre differently from the exact float32 quotient the rule (and the kernels) use.
    # The constants are filled on the device: a tensor made on the host and copied there would
    # wait for all queued GPU work.
    length = torch.full((), float(out_len), dtype=torch.float32, device=device)
    centre = (torch.arange(out_len, dtype=torch.float32, device=device) + 0.5) / length
    ratio = torch.full((), window_ratio, dtype=torch.float32, device=device)
    start = ((centre - ratio).clamp(0.0, 1.0) * in_len).floor().long()
    stop = ((centre + ratio).clamp(0.0, 1.0) * in_len).ceil().long()
    return start, stop


def window_mask(out_size: tuple[int, int], in_size: tuple[int, int], window_ratio: float,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Dense boolean mask (H*W, h*w), True where an output pixel may attend to a key.

    Only for references and small problems: its size is what the real backends avoid.
    """
    (H, W), (h, w) = out_size, in_size
    r0, r1 = window_bounds_1d(H, h, window_ratio, device)
    c0, c1 = window_bounds_1d(W, w, window_ratio, device)
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    row_ok = (rows >= r0[:, None]) & (rows < r1[:, None])          # (H, h)
    col_ok = (cols >= c0[:, None]) & (cols < c1[:, None])          # (W, w)
    return (row_ok[:, None, :, None] & col_ok[None, :, None, :]).reshape(H * W, h * w)
