"""The guidance image AnyUp expects: RGB in [0, 1], normalised with ImageNet's mean and std.

AnyUp's image encoder was trained on images normalised this way (whatever the backbone whose
features it upsamples), so every caller hands it ``imagenet_normalise(rgb)``; a pipeline that
has already normalised the image differently converts it with one affine map (the neck does).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: ImageNet's per-channel mean and standard deviation (R, G, B) of images in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise_channels(images: torch.Tensor, mean: Sequence[float] | torch.Tensor,
                       std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB -> (images - mean) / std per channel, same shape, dtype and device.

    ``mean`` and ``std``: 3 values each; numbers are copied to the images' device on every
    call (on a GPU the copy waits for the work queued before it), tensors already there are
    not (:class:`ChannelNormalisation` keeps them there).
    """
    if images.dim() < 3 or images.shape[-3] != 3:
        raise ValueError(f'images: expected RGB images (..., 3, H, W), got shape '
                         f'{tuple(images.shape)}')
    mean = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(3, 1, 1)
    std = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images - mean) / std


class ChannelNormalisation(nn.Module):
    """:func:`normalise_channels` with a fixed mean and std, held as buffers that move with
    the module: no copy from the host per call. They are float64 until the module is cast
    (``.half()`` rounds them like any buffer) and are not saved in checkpoints (the values come
    from the constructor).

    Input (..., 3, H, W) RGB; output the same shape, dtype and device.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float64), persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float64), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return normalise_channels(images, self.mean, self.std)


def imagenet_normalise(images: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> AnyUp's guidance input, same shape."""
    return normalise_channels(images, IMAGENET_MEAN, IMAGENET_STD)

