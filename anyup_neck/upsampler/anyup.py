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

``forward`` is ``upsample(encode_image(image), ...)``; ``attention_map`` inspects one output
pixel's row of the same attention.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import architecture_from_state_dict, load_checked, read_state_dict
from .layers import CrossAttentionBlock, Encoder, LearnedFeatureUnification, ResBlock, RoPE


def _encoder(first: nn.Module, first_channels: int, dim: int, num_blocks: int = 2) -> Encoder:
    """``first`` followed by ResBlocks, the first taking ``first_channels``."""
    blocks = [ResBlock(first_channels if i == 0 else dim, dim) for i in range(num_blocks)]
    return Encoder(first, *blocks)


def _conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Conv2d:
    # Reflect padding; a 1x1 conv pads nothing, and zero mode skips F.pad's copy.
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                     padding_mode='reflect' if kernel_size > 1 else 'zeros', bias=False)


_AUTOCAST_CASTS = (torch.float32, torch.float16, torch.bfloat16)


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
        backend: window-attention backend, see :func:`anyup_neck.ops.window_attention`;
            also the attribute :attr:`backend`.

    Under ``torch.autocast`` (bfloat16, float16) the convolutions run in the reduced type, the
    norms' and softmaxes' statistics in float32; the output has the features' dtype.
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

    # -- settings -------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """Window-attention backend (see :func:`anyup_neck.ops.window_attention`); settable."""
        return self.cross_decode.cross_attn.backend

    @backend.setter
    def backend(self, name: str) -> None:
        self.cross_decode.cross_attn.backend = name

    # -- inputs ---------------------------------------------------------------------------
    def _parameter(self) -> torch.Tensor:
        return self.image_encoder[0].weight

    def _check_map(self, name: str, t: object, shape: str, channels: int | None) -> torch.Tensor:
        """A (B, channels, H, W) float map on the model's device, in the model's dtype (or a
        type that ``torch.autocast`` casts, under autocast)."""
        if not isinstance(t, torch.Tensor):
            raise TypeError(f'{name}: expected a torch.Tensor, got {type(t).__name__}')
        if t.dim() != 4 or (channels is not None and t.shape[1] != channels):
            raise ValueError(f'{name}: expected shape {shape}, got {tuple(t.shape)}')
        if not t.is_floating_point():
            raise TypeError(f'{name}: expected a floating-point dtype, got {t.dtype}')
        if t.numel() == 0:
            raise ValueError(f'{name}: expected non-empty dimensions, got {tuple(t.shape)}')
        param = self._parameter()
        if t.device != param.device:
            raise ValueError(f"{name}: expected device {param.device} (the model's), "
                             f'got {t.device}')
        # Autocast casts float32/float16/bfloat16 inputs of the convolutions, never float64.
        autocast = torch.is_autocast_enabled(t.device.type) and t.dtype in _AUTOCAST_CASTS
        if t.dtype != param.dtype and not autocast:
            raise TypeError(f"{name}: expected dtype {param.dtype} (the model's; under "
                            f'torch.autocast also float16 or bfloat16), got {t.dtype}')
        return t

    def check_image(self, image: object) -> torch.Tensor:
        """``image`` if it is a (B, in_channels, H, W) float tensor on the model's device and in
        its dtype (under autocast also float16/bfloat16), else a ValueError/TypeError naming
        the argument, the expected and the actual value."""
        return self._check_map('image', image, f'(B, {self.in_channels}, H, W)', self.in_channels)

    def _check_encoding(self, encoding: object) -> torch.Tensor:
        D = self.rope.freqs.shape[1]
        return self._check_map('encoding', encoding, f'(B, {D}, H, W) (from encode_image)', D)

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
        image = self.check_image(image).contiguous(memory_format=torch.channels_last)
        return self.rope(self.image_encoder(image), overwrite=True)

    def _queries_and_keys(self, encoding: torch.Tensor, features: torch.Tensor,
                          output_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled queries (B, D, H, W) and aggregated keys (B, D, h, w), the inputs of
        ``cross_decode`` besides the features (B, C, h, w).

        Keys first: pooled to the small feature grid at once, they take no memory while the
        full-size queries are built.
        """
        features = self._check_features(features, encoding.shape[0], encoding.device)
        k = self.key_encoder(encoding, pool_to=tuple(features.shape[-2:]))
        normalised = F.normalize(features.to(self._parameter().dtype), dim=1)
        k = self.aggregation(torch.cat([k, self.key_features_encoder(normalised)], dim=1))
        return self.query_encoder(encoding, pool_to=output_size), k

    def upsample(self, encoding: torch.Tensor, features: torch.Tensor,
                 output_size: int | Sequence[int]) -> torch.Tensor:
        """Upsample ``features`` (B, C, h, w) to ``output_size`` guided by ``encoding``.

        ``encoding`` comes from :meth:`encode_image`. Returns (B, C, H, W) in the features'
        dtype.
        """
        size = _check_size(output_size)
        q, k = self._queries_and_keys(self._check_encoding(encoding), features, size)
        return self.cross_decode(q, k, features, overwrite=True)

    def attention_map(self, image: torch.Tensor, features: torch.Tensor,
                      output_size: int | Sequence[int], pixel: tuple[int, int]) -> torch.Tensor:
        """Weights (B, h, w) with which output ``pixel`` (row, col) averages the features."""
        size = _check_size(output_size)
        q, k = self._queries_and_keys(self.encode_image(image), features, size)
        return self.cross_decode.pixel_weights(q, k, pixel)

    def forward(self, image: torch.Tensor, features: torch.Tensor,
                output_size: int | Sequence[int] | None = None) -> torch.Tensor:
        """image (B, 3, H_img, W_img), features (B, C, h, w) -> (B, C, *output_size).

        ``output_size`` defaults to the image size; any size works (larger or smaller than the
        features, non-square, non-integer ratios). Returns the features' dtype.
        """
        image = self.check_image(image)
        size = _check_size(tuple(image.shape[-2:]) if output_size is None else output_size)
        # :meth:`upsample` without holding the encoding: dropped once the queries are built, so
        # that the decoding and the attention reuse its memory.
        encoding = self.encode_image(image)
        q, k = self._queries_and_keys(encoding, features, size)
        del encoding
        return self.cross_decode(q, k, features, overwrite=True)

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
