"""Pictures of feature maps: a joint PCA to RGB, and labelled side-by-side panels as PNG.

Torch and Pillow only. A joint PCA (one basis fitted on all maps together) makes colours
comparable across maps: the same feature vector gets the same colour in the low-resolution
input and in every upsampled version.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from .upsampler.normalization import IMAGENET_MEAN, IMAGENET_STD


def pca_rgb(feature_maps: Sequence[torch.Tensor], max_samples: int = 50_000,
            seed: int = 0) -> list[torch.Tensor]:
    """Project (C, h_i, w_i) maps onto their first 3 joint principal components.

    Returns one (3, h_i, w_i) tensor in [0, 1] per map; colours are stretched jointly between
    the 1st and 99th percentile of each component.
    """
    channels = {m.shape[0] for m in feature_maps}
    if len(channels) != 1:
        raise ValueError(f'feature_maps: expected one channel count, got {sorted(channels)}')
    flat = [m.detach().float().flatten(1).t() for m in feature_maps]        # (h*w, C)
    pixels = torch.cat(flat)
    generator = torch.Generator().manual_seed(seed)
    if pixels.shape[0] > max_samples:
        pixels = pixels[torch.randperm(pixels.shape[0], generator=generator)[:max_samples]]
    mean = pixels.mean(dim=0)
    _, _, v = torch.linalg.svd(pixels - mean, full_matrices=False)
    basis = v[:3].t()                                                        # (C, <=3)
    if basis.shape[1] < 3:
        basis = F.pad(basis, (0, 3 - basis.shape[1]))
    projected = [(f - mean) @ basis for f in flat]
    joint = torch.cat(projected)
    lo = torch.quantile(joint[:max_samples], 0.01, dim=0)
    hi = torch.quantile(joint[:max_samples], 0.99, dim=0)
    scale = (hi - lo).clamp_min(1e-8)
    return [((p - lo) / scale).clamp(0, 1).t().reshape(3, *m.shape[1:])
            for p, m in zip(projected, feature_maps)]


def denormalize(image: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """(3, H, W) image normalised with ``mean``/``std`` (default: AnyUp's guidance input)
    -> (3, H, W) RGB in [0, 1]."""
    m = torch.tensor(mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image * s + m).clamp(0, 1)


def to_pil(rgb: torch.Tensor, size: tuple[int, int] | None = None) -> Image.Image:
    """(3, H, W) in [0, 1] -> PIL image, optionally resized (nearest, so cells stay visible)."""
    array = (rgb.detach().cpu().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    picture = Image.fromarray(array)
    if size is not None and picture.size != (size[1], size[0]):
        picture = picture.resize((size[1], size[0]), Image.NEAREST)
    return picture


def save_panel(tiles: Sequence[tuple[str, Image.Image]], path: str | os.PathLike,
               label_height: int = 16) -> Image.Image:
    """Place labelled pictures of one size side by side and write them as a PNG."""
    sizes = {picture.size for _, picture in tiles}
    if len(sizes) != 1:
        raise ValueError(f'tiles: expected pictures of one size, got {sorted(sizes)}')
    (width, height), = sizes
    panel = Image.new('RGB', (width * len(tiles), height + label_height), 'white')
    draw = ImageDraw.Draw(panel)
    for i, (label, picture) in enumerate(tiles):
        panel.paste(picture.convert('RGB'), (i * width, label_height))
        draw.text((i * width + 3, 2), label, fill='black')
    os.makedirs(os.path.dirname(os.fspath(path)) or '.', exist_ok=True)
    panel.save(path)
    return panel
