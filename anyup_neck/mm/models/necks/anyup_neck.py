"""AnyUp as an mmseg neck: image-guided upsampling of any backbone's features.

The image is encoded once per forward and the encoding shared by every output. The guidance
image arrives normalised the way the *data preprocessor* normalises (the backbone's mean/std,
0-255 scale, RGB); AnyUp expects ImageNet normalisation
(:mod:`anyup_neck.upsampler.normalization`), so one affine map converts it. The segmentors set
that map from their data preprocessor (:meth:`AnyUpNeck.set_image_normalization`) unless the
config gives ``image_mean``/``image_std``.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import nullcontext

import torch
from mmengine.logging import print_log
from mmseg.registry import MODELS

from ....upsampler import IMAGENET_MEAN, IMAGENET_STD, AnyUp, load_checked, read_state_dict
from .resampling import ResamplingNeck


def _checkpoint_from_init_cfg(init_cfg: dict | None) -> tuple[str | None, str]:
    """``init_cfg=dict(type='Pretrained', checkpoint=path_or_url, prefix='')`` -> (path, prefix).

    ``checkpoint=None`` (or no ``init_cfg``) keeps the random initialisation. Checked at build
    time: a local file must exist (URLs are fetched by ``init_weights``).
    """
    if init_cfg is None:
        return None, ''
    if not isinstance(init_cfg, dict) or init_cfg.get('type') != 'Pretrained' \
            or 'checkpoint' not in init_cfg or set(init_cfg) - {'type', 'checkpoint', 'prefix'}:
        raise ValueError(f"init_cfg: expected dict(type='Pretrained', checkpoint=<file or URL>"
                         f"[, prefix=<key prefix>]), got {init_cfg!r}")
    if init_cfg['checkpoint'] is None:
        return None, ''
    checkpoint = os.fspath(init_cfg['checkpoint'])
    if not checkpoint.startswith(('http://', 'https://')) and not os.path.isfile(checkpoint):
        raise FileNotFoundError(
            f"init_cfg.checkpoint: expected an AnyUp checkpoint file or URL, got {checkpoint!r} "
            f"(no such file). Official weights: https://github.com/wimmerth/anyup/releases/"
            f"download/checkpoint_v2/anyup_multi_backbone.pth")
    return checkpoint, init_cfg.get('prefix', '')


def _rgb_triple(name: str, value: Sequence[float]) -> torch.Tensor:
    if len(value) != 3:
        raise ValueError(f'{name}: expected 3 values (R, G, B on the 0-255 scale), got {value!r}')
    return torch.tensor([float(v) for v in value]).view(1, 3, 1, 1)


@MODELS.register_module()
class AnyUpNeck(ResamplingNeck):
    """Upsample the chosen backbone levels with AnyUp, guided by the input image.

    Args:
        in_index, out_strides: see :class:`ResamplingNeck`.
        upsampler: :class:`~anyup_neck.AnyUp` constructor arguments; ``{}`` = the official
            architecture (what the released checkpoints need).
        frozen: keep the upsampler fixed (eval mode, no grads, not in the optimizer).
        backend: window-attention backend (``'auto'``, ``'torch'``, ``'cpp'``, ``'cuda'``...),
            overrides ``upsampler['backend']``.
        image_mean, image_std: how the guidance image is normalised (RGB, 0-255 scale; the data
            preprocessor's values). None = set by the segmentor from its data preprocessor.
        init_cfg: ``dict(type='Pretrained', checkpoint=<file or URL>, prefix='')``: AnyUp
            weights (official ``anyup_multi_backbone.pth``/``anyup_paper.pth`` or files written
            by ``tools/train_upsampler.py``), loaded strictly by :meth:`init_weights`;
            ``checkpoint=None`` = random weights.

    Shapes: ``forward(inputs, image)``: inputs[l] (B, C_l, h_l, w_l), image (B, 3, H, W)
    -> tuple of (B, C_l, ceil(H/s), ceil(W/s)).
    """

    def __init__(self, in_index: int | Sequence[int] = -1,
                 out_strides: int | Sequence[int] = (1,), upsampler: dict | None = None,
                 frozen: bool = True, backend: str | None = None,
                 image_mean: Sequence[float] | None = None,
                 image_std: Sequence[float] | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(in_index, out_strides)
        self.checkpoint, self.checkpoint_prefix = _checkpoint_from_init_cfg(init_cfg)
        upsampler = dict(upsampler or {})
        if backend is not None:
            upsampler['backend'] = backend
        self.upsampler = AnyUp(**upsampler)
        self.frozen = frozen
        if frozen:
            self.upsampler.requires_grad_(False)
        self.register_buffer('_guidance_scale', torch.ones(1, 3, 1, 1), persistent=False)
        self.register_buffer('_guidance_shift', torch.zeros(1, 3, 1, 1), persistent=False)
        self.image_normalization_set = False
        if (image_mean is None) != (image_std is None):
            raise ValueError(f'image_mean / image_std: expected both or neither, got '
                             f'image_mean={image_mean!r}, image_std={image_std!r}')
        if image_mean is not None:
            self.set_image_normalization(image_mean, image_std)

    def set_image_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Declare the input image's normalisation (RGB, 0-255 scale), e.g. the preprocessor's.

        Stores the affine map to ImageNet normalisation: ((x * std + mean) / 255 - m) / s.
        """
        mean, std = _rgb_triple('image_mean', mean), _rgb_triple('image_std', std)
        imagenet_mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        imagenet_std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self._guidance_scale.copy_(std / 255.0 / imagenet_std)
        self._guidance_shift.copy_((mean / 255.0 - imagenet_mean) / imagenet_std)
        self.image_normalization_set = True

    def guidance(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessor-normalised image -> ImageNet-normalised, same shape."""
        if not self.image_normalization_set:
            raise RuntimeError('AnyUpNeck: the input image normalisation is unknown; give '
                               'image_mean/image_std or build it inside AnyUpEncoderDecoder / '
                               'AnyUpDepthEstimator, which set it from data_preprocessor')
        return self.upsampler.check_image(image) * self._guidance_scale + self._guidance_shift

    def resample(self, features: list[torch.Tensor], image: torch.Tensor,
                 sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        with torch.no_grad() if self.frozen else nullcontext():
            encoding = self.upsampler.encode_image(self.guidance(image))
        return [self.upsampler.upsample(encoding, f, size) for f, size in zip(features, sizes)]

    def train(self, mode: bool = True) -> 'AnyUpNeck':
        super().train(mode)
        if self.frozen:
            self.upsampler.eval()
        return self

    def init_weights(self) -> None:
        """Load the AnyUp checkpoint of ``init_cfg`` strictly (every mismatch is listed)."""
        if self.checkpoint is not None:
            state = read_state_dict(self.checkpoint, 'cpu', self.checkpoint_prefix)
            load_checked(self.upsampler, state)
            print_log(f'AnyUpNeck: loaded upsampler weights from {self.checkpoint}',
                      logger='current')
        self._is_init = True
