"""Shared interface of the image-guided necks: which backbone levels, resampled to which strides.

A neck of this family takes the backbone's tuple of feature maps *and the input image*
(``forward(inputs, image)``; the segmentors in :mod:`anyup_neck.mm.models.segmentors` pass
it) and returns one feature map per output, each at ``ceil(image size / stride)``:

- ``in_index=(-1,), out_strides=(1,)``: the last level at image resolution (linear probing);
- ``in_index=(-1,), out_strides=(4, 8, 16, 32)``: a pyramid from a single-scale ViT (DPT);
- ``in_index=(2, 5, 8, 11), out_strides=(4, 8, 16, 32)``: level i to stride i (DPT);
- ``in_index=(5, 11), out_strides=(1,)``: several levels, all at image resolution.

Equal lengths pair up; a length-1 side is repeated. Subclasses implement :meth:`resample`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from mmengine.model import BaseModule


def _int_tuple(name: str, value: int | Sequence[int]) -> tuple[int, ...]:
    values = (value,) if isinstance(value, int) else tuple(value)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise TypeError(f'{name}: expected an int or a non-empty sequence of ints, got {value!r}')
    return values


class ResamplingNeck(BaseModule):
    """Base of :class:`AnyUpNeck` and :class:`BilinearNeck` (one interface, one line to swap).

    Args:
        in_index: backbone outputs to use (negative from the end).
        out_strides: image-to-output downsampling factor of each output (1 = image size).
    """

    #: Segmentors pass the input image to necks that set this.
    takes_image = True

    def __init__(self, in_index: int | Sequence[int] = -1,
                 out_strides: int | Sequence[int] = (1,)) -> None:
        super().__init__()
        self.in_index = _int_tuple('in_index', in_index)
        self.out_strides = _int_tuple('out_strides', out_strides)
        if min(self.out_strides) < 1:
            raise ValueError(f'out_strides: expected positive strides, got {self.out_strides}')
        n_in, n_out = len(self.in_index), len(self.out_strides)
        if n_in != n_out and 1 not in (n_in, n_out):
            raise ValueError(f'in_index / out_strides: expected equal lengths (level i -> stride '
                             f'i) or one of length 1, got {n_in} levels {self.in_index} and '
                             f'{n_out} strides {self.out_strides}')
        self.num_outputs = max(n_in, n_out)

    def check_num_levels(self, num_levels: int) -> None:
        """Raise if ``in_index`` does not fit a backbone giving ``num_levels`` maps."""
        bad = [i for i in self.in_index if not -num_levels <= i < num_levels]
        if bad:
            raise ValueError(f'in_index: expected indices in [-{num_levels}, {num_levels}) '
                             f'(the backbone gives {num_levels} feature maps), got '
                             f'{self.in_index}')

    def plan(self) -> list[tuple[int, int]]:
        """(backbone level, output stride) of each output."""
        levels = self.in_index * (self.num_outputs // len(self.in_index))
        strides = self.out_strides * (self.num_outputs // len(self.out_strides))
        return list(zip(levels, strides))

    def forward(self, inputs: Sequence[torch.Tensor],
                image: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """inputs: backbone maps (B, C_l, h_l, w_l); image: (B, 3, H, W) as the model sees it.

        Returns one (B, C_l, ceil(H/s), ceil(W/s)) map per (level l, stride s) of :meth:`plan`.
        """
        if image is None:
            raise TypeError(f'{type(self).__name__} needs the input image: use '
                            f"type='AnyUpEncoderDecoder' (segmentation) or "
                            f"type='AnyUpDepthEstimator' (depth) as the segmentor, not "
                            f"mmseg's EncoderDecoder / DepthEstimator")
        self.check_num_levels(len(inputs))
        height, width = image.shape[-2:]
        plan = self.plan()
        features = [inputs[level] for level, _ in plan]
        sizes = [(math.ceil(height / s), math.ceil(width / s)) for _, s in plan]
        return tuple(self.resample(features, image, sizes))

    def resample(self, features: list[torch.Tensor], image: torch.Tensor,
                 sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Resample ``features[i]`` to ``sizes[i]``; ``image`` is the model's input image."""
        raise NotImplementedError
