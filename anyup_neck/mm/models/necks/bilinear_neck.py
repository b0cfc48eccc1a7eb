"""The interpolation baseline of :class:`AnyUpNeck`: same interface, no learned guidance."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

from .resampling import ResamplingNeck

MODES = ('bilinear', 'bicubic', 'nearest')


@MODELS.register_module()
class BilinearNeck(ResamplingNeck):
    """Resample the chosen backbone levels by plain interpolation (A/B baseline for AnyUp).

    Swap it in with one line, e.g.
    ``model = dict(neck=dict(_delete_=True, type='BilinearNeck'))``.

    Args:
        in_index, out_strides: see :class:`ResamplingNeck`.
        mode: ``'bilinear'``, ``'bicubic'`` or ``'nearest'``.
        align_corners: for the bilinear/bicubic modes.
    """

    def __init__(self, in_index: int | Sequence[int] = -1,
                 out_strides: int | Sequence[int] = (1,), mode: str = 'bilinear',
                 align_corners: bool = False) -> None:
        super().__init__(in_index, out_strides)
        if mode not in MODES:
            raise ValueError(f'mode: expected one of {MODES}, got {mode!r}')
        self.mode = mode
        self.align_corners = None if mode == 'nearest' else align_corners

    def resample(self, features: list[torch.Tensor], image: torch.Tensor,
                 sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        return [F.interpolate(f, size=size, mode=self.mode, align_corners=self.align_corners)
                for f, size in zip(features, sizes)]
