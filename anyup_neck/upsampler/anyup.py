"""AnyUp (ICLR 2026) as a plain ``nn.Module``: image-guided upsampling of any features.

    up = AnyUp.from_pretrained('anyup_multi_backbone.pth')
    hr = up(image, features, output_size=(H, W))

The module tree and parameter names reproduce the official model, so official checkpoints load
unchanged and give the official outputs. Data flow (D = qk_dim):

    enc  = RoPE(image_encoder(image))                               (B, D, H_img, W_img)
    q    = pool(query_encoder(enc), output_size)                    (B, D, H, W)
    k    = aggregation([pool(key_encoder(enc), (h, w)),
                        key_features_encoder(normalize(features))])   (B, D, h, w)
    out  = cross_decode(q, k, features)                             (B, C, H, W)
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import architecture_from_state_dict, load_checked, read_state_dict
from .layers import (CrossAttentionBlock, Encoder, LearnedFeatureUnification, ResBlock, RoPE,
                     adaptive_pool)


def _encoder(first: nn.Module, first_channels: int, dim: int, num_blocks: int = 2) -> Encoder:
    """``first`` followed by ResBlocks, the first taking ``first_channels``."""
    blocks = [ResBlock(first_channels if i == 0 else dim, dim) for i in range(num_blocks)]
    return Encoder(first, *blocks)


def _conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Conv2d:
    # Reflect padding; a 1x1 conv pads nothing, and zero mode skips F.pad's copy.
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                     padding_mode='reflect' if kernel_size > 1 else 'zeros', bias=False)


def _check_size(size: object) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, Sequence) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in size)):
        raise TypeError(f'output_size: expected an int or a pair of ints (H, W), got {size!r}')
    if min(size) <= 0:
        raise ValueError(f'output_size: expected positive sizes, got {tuple(size)}')
    return int(size[0]), int(size[1])


class AnyUp(nn.Module):
    """Encoder-agnostic, image-guided feature upsampler.

    Args:
        qk_dim: width D of the image, query and key encodings (official: 128).
        num_heads: attention heads N; must divide ``qk_dim`` (official: 4).
        window_ratio: attention window half-size as a fraction of the feature map (0.1);
            0 attends globally.
        lfu_basis: number M of LFU basis kernels (128).
        lfu_kernel_size: LFU kernel size (5).
        lfu_mode: ``'official'`` (what the released checkpoints need) or ``'paper'``
            (channel-order invariant); see :class:`LearnedFeatureUnification`.
        in_channels: guidance image channels (3).
        image_kernel_size: kernel of the image encoder's first conv (1).
        backend: window-attention backend, see :func:`anyup_neck.ops.window_attention`.
    """

    def __init__(self, qk_dim: int = 128, num_heads: int = 4, window_ratio: float = 0.1,
                 lfu_basis: int = 128, lfu_kernel_size: int = 5, lfu_mode: str = 'official',
                 in_channels: int = 3, image_kernel_size: int = 1, backend: str = 'auto') -> None:
        super().__init__()
        for name, value in (('qk_dim', qk_dim), ('lfu_basis', lfu_basis)):
            if value < 8 or value % 8:
                raise ValueError(f'{name}: expected a positive multiple of 8 (GroupNorm(8) '
                                 f'groups), got {value}')
        if qk_dim % num_heads:
            raise ValueError(f'num_heads: expected a divisor of qk_dim={qk_dim}, got {num_heads}')
        if not 0.0 <= window_ratio <= 1.0:
            raise ValueError(f'window_ratio: expected a number in [0, 1], got {window_ratio}')
        self.in_channels = in_channels
        self.image_encoder = _encoder(_conv(in_channels, qk_dim, image_kernel_size), qk_dim, qk_dim)
        self.key_encoder = _encoder(_conv(qk_dim, qk_dim, 1), qk_dim, qk_dim)
        self.query_encoder = _encoder(_conv(qk_dim, qk_dim, 1), qk_dim, qk_dim)
        self.key_features_encoder = _encoder(
            LearnedFeatureUnification(lfu_basis, lfu_kernel_size, lfu_mode), lfu_basis, qk_dim)
        self.cross_decode = CrossAttentionBlock(qk_dim, num_heads, window_ratio, backend)
        self.aggregation = _encoder(_conv(2 * qk_dim, qk_dim, 3), qk_dim, qk_dim)
        self.rope = RoPE(qk_dim)

    # -- inputs ---------------------------------------------------------------------------
    def _check_image(self, image: object) -> torch.Tensor:
        if not isinstance(image, torch.Tensor):
            raise TypeError(f'image: expected a torch.Tensor, got {type(image).__name__}')
        if image.dim() != 4 or image.shape[1] != self.in_channels:
            raise ValueError(f'image: expected shape (B, {self.in_channels}, H, W), '
                             f'got {tuple(image.shape)}')
        if not image.is_floating_point():
            raise TypeError(f'image: expected a floating-point dtype, got {image.dtype}')
        if image.numel() == 0:
            raise ValueError(f'image: expected non-empty dimensions, got {tuple(image.shape)}')
        return image

    @staticmethod
    def _check_features(features: object, batch: int, device: torch.device) -> torch.Tensor:
        if not isinstance(features, torch.Tensor):
            raise TypeError(f'features: expected a torch.Tensor, got {type(features).__name__}')
        if features.dim() != 4:
            raise ValueError(f'features: expected shape (B, C, h, w), got {tuple(features.shape)}')
        if not features.is_floating_point():
            raise TypeError(f'features: expected a floating-point dtype, got {features.dtype}')
        if features.numel() == 0:
            raise ValueError(f'features: expected non-empty dimensions, '
                             f'got {tuple(features.shape)}')
        if features.shape[0] != batch:
            raise ValueError(f'features: expected batch size {batch} (the image batch), '
                             f'got {features.shape[0]}')
        if features.device != device:
            raise ValueError(f'features: expected device {device} (the image device), '
                             f'got {features.device}')
        return features

    # -- computation ----------------------------------------------------------------------
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) ImageNet-normalised image -> (B, D, H, W) position-encoded encoding.

        Computed once and reusable for several feature maps of the same image. The encoders
        run channels-last (NHWC memory): their 1x1 convs are GEMMs over pixels that way, about
        twice as fast on CPU; values and shapes are unaffected.
        """
        image = self._check_image(image).contiguous(memory_format=torch.channels_last)
        return self.rope(self.image_encoder(image))

    def _keys(self, encoding: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Aggregated keys (B, D, h, w) from the encoding and the features (B, C, h, w)."""
        features = self._check_features(features, encoding.shape[0], encoding.device)
        size = tuple(features.shape[-2:])
        k = self.key_encoder.pooled(encoding, size)
        unified = self.key_features_encoder(F.normalize(features.to(k.dtype), dim=1))
        return self.aggregation(torch.cat([k, unified], dim=1))

    def _pooled_queries(self, encoding: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
        """Queries (B, D, H, W) before their decoding: the query encoder pooled to the output."""
        return adaptive_pool(self.query_encoder(encoding), output_size)

    def upsample(self, encoding: torch.Tensor, features: torch.Tensor,
                 output_size: int | Sequence[int], backend: str | None = None) -> torch.Tensor:
        """Upsample ``features`` (B, C, h, w) to ``output_size`` guided by ``encoding``.

        ``encoding`` comes from :meth:`encode_image`. Returns (B, C, H, W) in the features'
        dtype.
        """
        size = _check_size(output_size)
        k = self._keys(encoding, features)
        q = self.cross_decode.decode_queries(self._pooled_queries(encoding, size))
        return self.cross_decode.cross_attn.attend(q, k, features, backend=backend)

    def attention_map(self, image: torch.Tensor, features: torch.Tensor,
                      output_size: int | Sequence[int], pixel: tuple[int, int]) -> torch.Tensor:
        """Weights (B, h, w) with which output ``pixel`` (row, col) averages the features."""
        size = _check_size(output_size)
        encoding = self.encode_image(image)
        k = self._keys(encoding, features)
        q = self.cross_decode.decode_queries(self._pooled_queries(encoding, size))
        return self.cross_decode.cross_attn.pixel_weights(q, k, pixel)

    def forward(self, image: torch.Tensor, features: torch.Tensor,
                output_size: int | Sequence[int] | None = None,
                backend: str | None = None) -> torch.Tensor:
        """image (B, 3, H_img, W_img), features (B, C, h, w) -> (B, C, *output_size).

        ``output_size`` defaults to the image size; any size works (larger or smaller than the
        features, non-square, non-integer ratios).
        """
        image = self._check_image(image)
        size = _check_size(tuple(image.shape[-2:]) if output_size is None else output_size)
        # Keys first: pooled to the small feature grid at once, they take no memory while the
        # full-size queries are built. Each full-size map is dropped as soon as it is used, so
        # that the decoding and the attention reuse its memory.
        encoding = self.encode_image(image)
        k = self._keys(encoding, features)
        q = self._pooled_queries(encoding, size)
        del encoding
        q = self.cross_decode.decode_queries(q)
        return self.cross_decode.cross_attn.attend(q, k, features, backend=backend)

    # -- checkpoints ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_url: str | os.PathLike, map_location: str | torch.device = 'cpu',
                        prefix: str = '', **kwargs) -> 'AnyUp':
        """Build an AnyUp whose shapes match the checkpoint and load it strictly.

        Works with the official ``anyup_paper.pth`` / ``anyup_multi_backbone.pth`` and with
        files exported by ``tools/train_upsampler.py``. ``kwargs`` (e.g. ``num_heads``,
        ``window_ratio``, ``lfu_mode``, ``backend``) go to the constructor.
        """
        state = read_state_dict(path_or_url, map_location, prefix)
        model = cls(**{**architecture_from_state_dict(state), **kwargs})
        load_checked(model, state)
        return model.to(map_location)
