"""Strong photometric augmentation of guidance images for the self-consistency term.

The self-consistency loss asks AnyUp to give the same upsampling whether the guidance image
is clean or heavily corrupted (paper App. C), so the augmentations change colours, contrast,
sharpness and compression artefacts but never the geometry. Every random draw comes from the
caller's ``torch.Generator``, which keeps training reproducible and resumable.

``strength`` in [0, 1] scales every operation; 0 leaves images unchanged (up to JPEG at
quality 100 and uint8 rounding).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torchvision.transforms.v2.functional as TF

Op = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def _as_uint8(img: torch.Tensor) -> torch.Tensor:
    return (img * 255).round().clamp(0, 255).to(torch.uint8)


def _from_uint8(img: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return img.to(device=like.device, dtype=like.dtype) / 255


def color_jitter(img: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    """Multiplicative brightness, contrast and saturation, and a hue shift."""
    img = TF.adjust_brightness(img, _uniform(g, 1 - 0.6 * s, 1 + 0.6 * s))
    img = TF.adjust_contrast(img, _uniform(g, 1 - 0.6 * s, 1 + 0.6 * s))
    img = TF.adjust_saturation(img, _uniform(g, 1 - 0.8 * s, 1 + 0.8 * s))
    return TF.adjust_hue(img, _uniform(g, -0.3 * s, 0.3 * s))


def photometric_distortion(img: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    """SSD/mmseg-style distortion: additive brightness shift and a random channel order."""
    img = (img + _uniform(g, -0.25 * s, 0.25 * s)).clamp(0, 1)
    if _uniform(g, 0, 1) < s:
        img = TF.permute_channels(img, torch.randperm(3, generator=g).tolist())
    return img


def grayscale(img: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    return torch.lerp(img, TF.rgb_to_grayscale(img, num_output_channels=3), s)


def blur(img: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    """Gaussian blur, sigma up to 3 px at 224 px (scaled with the image size)."""
    sigma = _uniform(g, 0, 3 * s) * min(img.shape[-2:]) / 224
    if sigma < 0.05:
        return img
    kernel = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(img, [kernel, kernel], [sigma, sigma])


#: Qualities JPEG re-compression picks from (at strength 1).
JPEG_QUALITIES = (5, 10, 20, 30, 50, 75)


def jpeg(img: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    """Re-compression at one of :data:`JPEG_QUALITIES`, moved towards 100 as s -> 0."""
    base = JPEG_QUALITIES[int(torch.randint(len(JPEG_QUALITIES), (), generator=g))]
    quality = round(100 - s * (100 - base))
    return _from_uint8(TF.jpeg(_as_uint8(img).cpu(), quality), img)


def autocontrast(img: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    return torch.lerp(img, TF.autocontrast(img), s)


def equalize(img: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    return torch.lerp(img, _from_uint8(TF.equalize(_as_uint8(img)), img), s)


def sharpness(img: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    """Sharpen (factor up to 1 + 3s) or soften (down to 1 - 0.9s)."""
    return TF.adjust_sharpness(img, 1 + s * _uniform(g, -0.9, 3.0))


def posterize(img: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    """Keep 8 - round(6 s u) bits per channel, u uniform in [0, 1]."""
    bits = 8 - round(6 * s * _uniform(g, 0, 1))
    return _from_uint8(TF.posterize(_as_uint8(img), bits), img)


def solarize(img: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    return torch.lerp(img, TF.solarize(img, _uniform(g, 0.3, 0.9)), s)


def invert(img: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    return torch.lerp(img, TF.invert(img), s)


def gaussian_noise(img: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    """Additive noise, standard deviation up to 0.15 s."""
    noise = torch.randn(img.shape, generator=g).to(img)
    return (img + _uniform(g, 0, 0.15 * s) * noise).clamp(0, 1)


#: Every operation by name; :class:`StrongAugment` draws from these.
AUGMENTATIONS: dict[str, Op] = {
    'color_jitter': color_jitter, 'photometric_distortion': photometric_distortion,
    'grayscale': grayscale, 'blur': blur, 'jpeg': jpeg, 'autocontrast': autocontrast,
    'equalize': equalize, 'sharpness': sharpness, 'posterize': posterize,
    'solarize': solarize, 'invert': invert, 'gaussian_noise': gaussian_noise,
}


class StrongAugment:
    """Apply ``num_ops`` distinct operations, drawn per image, in a random order.

    Args:
        strength: in [0, 1], scales every operation (0: identity).
        num_ops: operations per image (RandAugment-style).
        ops: names from :data:`AUGMENTATIONS` to draw from (default: all).
    """

    def __init__(self, strength: float = 1.0, num_ops: int = 3,
                 ops: Sequence[str] | None = None) -> None:
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) \
                or not 0.0 <= strength <= 1.0:
            raise ValueError(f'strength: expected a number in [0, 1], got {strength!r}')
        ops = list(AUGMENTATIONS) if ops is None else list(ops)
        unknown = [name for name in ops if name not in AUGMENTATIONS]
        if unknown or not ops:
            raise ValueError(f'ops: expected a non-empty list of names from '
                             f'{sorted(AUGMENTATIONS)}, got {ops!r}')
        if isinstance(num_ops, bool) or not isinstance(num_ops, int) \
                or not 1 <= num_ops <= len(ops):
            raise ValueError(f'num_ops: expected an int in [1, {len(ops)}], got {num_ops!r}')
        self.strength, self.num_ops, self.ops = float(strength), num_ops, ops

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(strength={self.strength}, num_ops={self.num_ops}, '
                f'ops={self.ops})')

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """images: (B, 3, H, W) float RGB in [0, 1] -> augmented copy, same shape and dtype."""
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f'images: expected a float (B, 3, H, W) batch, got '
                             f'{images.dtype} {tuple(images.shape)}')
        out = []
        for img in images:
            for i in torch.randperm(len(self.ops), generator=generator)[:self.num_ops].tolist():
                img = AUGMENTATIONS[self.ops[i]](img, self.strength, generator)
            out.append(img.clamp(0, 1))
        return torch.stack(out)
