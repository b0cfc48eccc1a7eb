"""Learned feature unification (LFU): features with any channel count -> M channels."""
from __future__ import annotations

import torch
from torch import nn

from ...ops import fused

LFU_MODES = ('official', 'paper')


class LearnedFeatureUnification(nn.Module):
    """Maps features with any channel count C to M channels (paper Eq. 1).

    Features are L2-normalised over channels by the caller. Each input channel is convolved on
    its own with every basis kernel (zero padding, each response divided by the number of
    in-image taps), giving M*C responses with flat index ``channel * M + basis``. These are
    arranged in an (M, C) grid whose column c holds the M responses that share one softmax:

    * ``'official'``: the flat responses read in order as an (M, C) array (what the official
      checkpoints were trained with: the official code views the channel-major stack as
      (B, M, C, h, w), softmaxes over its first axis and averages over its second; so the
      result depends on the order of the input channels);
    * ``'paper'``: column c holds channel c's M basis responses (invariant to channel order).

    The softmax runs down each column and the columns are averaged
    (:func:`~anyup_neck.ops.fused.basis_softmax_mean`).
    """

    def __init__(self, num_basis: int = 128, kernel_size: int = 5, mode: str = 'official') -> None:
        super().__init__()
        if mode not in LFU_MODES:
            raise ValueError(f'lfu_mode: expected one of {LFU_MODES}, got {mode!r}')
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'lfu_kernel_size: expected an odd positive int, got {kernel_size}')
        self.mode = mode
        self.kernel_size = kernel_size
        self.basis = nn.Parameter(torch.randn(num_basis, 1, kernel_size, kernel_size))

    def extra_repr(self) -> str:
        return f'num_basis={self.basis.shape[0]}, kernel_size={self.kernel_size}, mode={self.mode!r}'

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) normalised features -> (B, M, h, w)."""
        return fused.basis_softmax_mean(features, self.basis, per_channel=self.mode == 'paper')
