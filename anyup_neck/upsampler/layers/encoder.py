"""The encoders' blocks: pre-activation ResBlocks after a first layer."""
from __future__ import annotations

import torch
from torch import nn

from ...ops import fused
from ...ops.fused import adaptive_pool


class ResBlock(nn.Module):
    """GroupNorm(8) -> SiLU -> conv -> GroupNorm(8) -> SiLU -> conv, plus a shortcut.

    Convs have no bias; the shortcut is the identity, or a 1x1 conv when channels change.
    Parameters sit at ``block.0/.2/.3/.5`` (and ``shortcut``) as in the official model.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 num_groups: int = 8, padding_mode: str = 'reflect') -> None:
        super().__init__()
        pad = kernel_size // 2
        # Nothing to pad for 1x1 convs: zero mode skips the copy a reflect F.pad would make.
        mode = padding_mode if pad else 'zeros'
        self.block = nn.Sequential(
            nn.GroupNorm(num_groups, in_channels), nn.SiLU(),
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=pad,
                      padding_mode=mode, bias=False),
            nn.GroupNorm(num_groups, out_channels), nn.SiLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size, padding=pad,
                      padding_mode=mode, bias=False),
        )
        self.shortcut = (nn.Identity() if in_channels == out_channels
                         else nn.Conv2d(in_channels, out_channels, 1, bias=False))

    def forward(self, x: torch.Tensor, pool_to: tuple[int, int] | None = None,
                overwrite: bool = False) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W), or adaptive-average-pooled to ``pool_to``.

        ``overwrite``: x is the caller's temporary and may hold the result (see
        :func:`~anyup_neck.ops.fused.preactivation_residual`).
        """
        norm1, _, conv1, norm2, _, conv2 = self.block
        return fused.preactivation_residual(x, norm1, conv1, norm2, conv2, self.shortcut,
                                            pool_to=pool_to, overwrite=overwrite)


class Encoder(nn.Sequential):
    """A first layer, then ResBlocks (the official encoders' module tree, so the same keys)."""

    def forward(self, x: torch.Tensor, pool_to: tuple[int, int] | None = None) -> torch.Tensor:
        """x -> the encoding, adaptive-average-pooled to ``pool_to`` if given (the last block
        pools before its last conv where it can). The blocks work over the first layer's
        output, which is this encoder's own temporary."""
        x = self[0](x)
        if len(self) == 1:
            return adaptive_pool(x, pool_to)
        for n, block in enumerate(self[1:], start=2):
            x = block(x, pool_to=pool_to if n == len(self) else None, overwrite=True)
        return x
