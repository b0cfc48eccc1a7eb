"""Data pipeline of the upsampler training set: load, resize to cover, crop, flip, pack.

Each transform takes and returns mmcv's ``results`` dict (``img``: (H, W, 3) uint8 RGB
array). Random draws use numpy's global generator, which mmengine seeds per dataloader
worker, so the pipeline is reproducible for a given ``randomness.seed``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS
from PIL import Image

from ...utils import as_size


class UnreadableImageError(OSError):
    """An image file exists but cannot be decoded (corrupt, truncated, not an image)."""


@TRANSFORMS.register_module()
class LoadImageRGB(BaseTransform):
    """``results['img_path']`` -> ``results['img']`` (H, W, 3) uint8 RGB, fully decoded.

    Raises :class:`UnreadableImageError` naming the file when it cannot be decoded (the
    dataset skips such files with a warning).
    """

    def transform(self, results: dict) -> dict:
        path = results['img_path']
        try:
            with Image.open(path) as image:
                results['img'] = np.asarray(image.convert('RGB'))
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ... on bad files
            raise UnreadableImageError(f'cannot decode image {path!r}: '
                                       f'{type(err).__name__}: {err}') from err
        results['ori_shape'] = results['img'].shape[:2]
        return results


@TRANSFORMS.register_module()
class ResizeCoverCrop(BaseTransform):
    """Resize (keeping the aspect ratio) to just cover ``size``, then crop ``size`` out.

    Args:
        size: output (height, width) or side, e.g. 448.
        random_crop: crop at a uniformly drawn position (training) instead of the centre.
    """

    def __init__(self, size: int | Sequence[int], random_crop: bool = True) -> None:
        self.size = as_size('size', size)
        self.random_crop = random_crop

    def transform(self, results: dict) -> dict:
        img = results['img']
        (H, W), (h, w) = self.size, img.shape[:2]
        scale = max(H / h, W / w)
        new_h, new_w = max(H, round(h * scale)), max(W, round(w * scale))
        if (new_h, new_w) != (h, w):
            img = np.asarray(Image.fromarray(img).resize((new_w, new_h), Image.BICUBIC))
        if self.random_crop:
            top, left = np.random.randint(new_h - H + 1), np.random.randint(new_w - W + 1)
        else:
            top, left = (new_h - H) // 2, (new_w - W) // 2
        results['img'] = img[top:top + H, left:left + W]
        results['img_shape'] = self.size
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size}, random_crop={self.random_crop})'


@TRANSFORMS.register_module()
class RandomHorizontalFlip(BaseTransform):
    """Mirror ``results['img']`` left-right with probability ``prob``."""

    def __init__(self, prob: float = 0.5) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f'prob: expected a probability in [0, 1], got {prob!r}')
        self.prob = prob

    def transform(self, results: dict) -> dict:
        if np.random.rand() < self.prob:
            results['img'] = results['img'][:, ::-1]
        return results


@TRANSFORMS.register_module()
class PackImage(BaseTransform):
    """``results`` -> ``dict(inputs=(3, H, W) uint8 tensor)``, what ``AnyUpCropConsistency``
    takes."""

    def transform(self, results: dict) -> dict:
        img = np.ascontiguousarray(results['img'].transpose(2, 0, 1))
        return dict(inputs=torch.from_numpy(img))
