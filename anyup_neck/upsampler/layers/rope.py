"""2-D rotary position encoding of the image encoding."""
from __future__ import annotations

import math

import torch
from torch import nn

from ...ops import fused


class RoPE(nn.Module):
    """2-D rotary position encoding over the channels of an NCHW map.

    Coordinates are linspace(0, 1) per axis at the map's resolution; ``freqs`` (2, D) maps
    (row, col) to D angles, angle = row * freqs[0] + col * freqs[1]. It is a parameter, so
    checkpoints override the initial values. Channels d and d + D/2 rotate as a pair:
    out = x * cos(angle) + cat(-x2, x1) * sin(angle).
    """

    def __init__(self, dim: int, theta: float = 100.0) -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f'qk_dim: expected a multiple of 4 for 2-D RoPE, got {dim}')
        g = theta ** torch.linspace(0, -1, dim // 4)
        f = 2 * math.pi * torch.cat([g, g])
        freqs = torch.zeros(2, dim)
        freqs[0, :dim // 2] = f
        freqs[1, dim // 2:] = f
        self.freqs = nn.Parameter(freqs)

    def forward(self, x: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
        """(B, D, H, W) -> (B, D, H, W) rotated; with ``overwrite`` x may hold the result.

        The angles are computed in float32 (float64 for float64 x), whatever x's dtype.
        """
        H, W = x.shape[-2:]
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        freqs = self.freqs.to(dtype)

        def angles(n: int, f: torch.Tensor) -> torch.Tensor:
            return torch.linspace(0, 1, n, device=x.device, dtype=dtype)[:, None] * f

        return fused.rotary_2d(x, angles(H, freqs[0]), angles(W, freqs[1]), overwrite=overwrite)
