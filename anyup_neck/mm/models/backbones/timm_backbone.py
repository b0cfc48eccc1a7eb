"""Any timm model as an mmseg backbone: chosen blocks / stages out as NCHW feature maps.

ViTs (DINOv2/-reg, DINOv3, CLIP, SigLIP 2, MAE, DeiT, ...) and CNNs (ResNet, ConvNeXt, ...) all
go through timm's ``forward_intermediates``: for a ViT, an index is a transformer block and
its patch tokens come back reshaped to (B, C, H/p, W/p) with the prefix (class / register)
tokens dropped; for a CNN, an index is an entry of ``model.feature_info`` (the stem and the
stages: the feature pyramid). Layers after the last chosen index, and the classifier, are
pruned away so they cost nothing.
"""
from __future__ import annotations

import difflib
import os
from collections.abc import Sequence

import timm
import torch
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import nn

from ....upsampler.normalization import ChannelNormalisation


def _check_model_name(model_name: str) -> None:
    architecture = model_name.split('.', 1)[0]
    if not timm.is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models(), n=5)
        raise ValueError(f'model_name: expected a timm model name (see timm.list_models()), '
                         f'got {model_name!r}' + (f'; close matches: {close}' if close else ''))


def _create(model_name: str, pretrained: str | None, dynamic_img_size: bool,
            model_kwargs: dict) -> nn.Module:
    """timm.create_model without a classifier, weights from a local file (never a hub).

    ``dynamic_img_size`` is passed to models that take it (ViTs); CNNs accept any size anyway.
    """
    kwargs = dict(model_kwargs, num_classes=0)
    if pretrained is not None:
        # timm's own loader applies the model's checkpoint filter, so original releases
        # (e.g. Meta's DINOv2 .pth) as well as timm/HF files (.safetensors) load.
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=pretrained, source=''))
    try:
        return timm.create_model(model_name, dynamic_img_size=dynamic_img_size, **kwargs)
    except TypeError as err:
        if 'dynamic_img_size' not in str(err):
            raise
    return timm.create_model(model_name, **kwargs)


def _normalise_indices(out_indices: Sequence[int], num_levels: int, model_name: str) -> list[int]:
    if isinstance(out_indices, int):
        out_indices = (out_indices,)
    bad = [i for i in out_indices if not -num_levels <= i < num_levels]
    if not out_indices or bad:
        raise ValueError(f'out_indices: expected indices in [-{num_levels}, {num_levels}) '
                         f'({num_levels} blocks/stages in {model_name!r}), '
                         f'got {tuple(out_indices)}')
    indices = [i % num_levels for i in out_indices]
    if indices != sorted(set(indices)):
        raise ValueError(f'out_indices: expected distinct indices in increasing order, got '
                         f'{tuple(out_indices)} (= {tuple(indices)} for {model_name!r})')
    return indices


@MODELS.register_module()
class TimmBackbone(BaseModule):
    """A timm model returning a tuple of NCHW feature maps from chosen blocks or stages.

    Args:
        model_name: any ``timm.list_models()`` name, optionally with a pretrained tag
            (``'vit_base_patch16_siglip_224.v2_webli'``: the tag selects mean/std).
        pretrained: local weights file (timm/HF ``.safetensors``/``.pth``, or an original
            release that timm's checkpoint filter converts). None = random init. Nothing is
            ever downloaded.
        out_indices: ViT block indices / CNN ``feature_info`` indices (negative from the end),
            distinct and increasing; ``(-1,)`` = last block.
        norm: apply the model's final norm to every output (ViTs: the DINO-style "normed"
            features).
        dynamic_img_size: ViTs accept any input size (position embeddings interpolated);
            the input should be a multiple of :attr:`patch_size`.
        model_kwargs: more ``timm.create_model`` arguments (e.g. ``init_values=1.0``,
            ``drop_path_rate``).

    Attributes:
        out_channels: channels of each output.
        out_strides: input-to-output downsampling factor of each output.
        patch_size: the input size should be a multiple of this (ViT: patch size; CNN: the
            largest output stride).
        mean, std: the normalisation the weights expect, per RGB channel on the 0-255 scale
            (what mmseg's ``SegDataPreProcessor`` takes).

    Shapes: ``forward`` (B, 3, H, W) -> tuple of (B, out_channels[i], H / s_i, W / s_i).
    """

    def __init__(self, model_name: str, pretrained: str | None = None,
                 out_indices: Sequence[int] = (-1,), norm: bool = False,
                 dynamic_img_size: bool = True, model_kwargs: dict | None = None) -> None:
        super().__init__()
        _check_model_name(model_name)
        if pretrained is not None and not os.path.isfile(pretrained):
            raise FileNotFoundError(f'pretrained: expected a local weights file for '
                                    f'{model_name!r}, got {pretrained!r} (no such file)')
        model = _create(model_name, pretrained, dynamic_img_size, dict(model_kwargs or {}))
        if not hasattr(model, 'forward_intermediates'):
            raise ValueError(f'model_name: {model_name!r} ({type(model).__name__}) has no '
                             f'forward_intermediates in timm {timm.__version__}; '
                             f'pick another model')
        info = model.feature_info
        self.out_indices = _normalise_indices(out_indices, len(info), model_name)
        self.norm = norm
        self.out_channels = tuple(info[i].get('num_chs_norm', info[i]['num_chs']) if norm
                                  else info[i]['num_chs'] for i in self.out_indices)
        self.out_strides = tuple(int(info[i]['reduction']) for i in self.out_indices)
        self.patch_size = max(self.out_strides) if not hasattr(model, 'patch_embed') else \
            self.out_strides[0]
        config = model.pretrained_cfg
        self.mean = tuple(255.0 * m for m in config.get('mean', timm.data.IMAGENET_DEFAULT_MEAN))
        self.std = tuple(255.0 * s for s in config.get('std', timm.data.IMAGENET_DEFAULT_STD))
        self.normalisation = ChannelNormalisation([m / 255 for m in self.mean],
                                                  [s / 255 for s in self.std])
        if hasattr(model, 'prune_intermediate_layers'):
            model.prune_intermediate_layers(self.out_indices, prune_norm=not norm, prune_head=True)
        self.model = model

    def init_weights(self) -> None:
        """Keep the weights timm built (random init or ``pretrained``).

        mmengine's default would call the timm model's own ``init_weights`` when the Runner
        starts and silently re-initialise pretrained weights.
        """
        self._is_init = True

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> the input the weights expect (:attr:`mean`/:attr:`std`).

        What mmseg's data preprocessor does with ``mean``/``std`` on the 0-255 scale, for
        callers that hold images in [0, 1].
        """
        return self.normalisation(images)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, 3, H, W) normalised image -> tuple of NCHW maps, one per ``out_indices``."""
        features = self.model.forward_intermediates(x, indices=self.out_indices, norm=self.norm,
                                                    output_fmt='NCHW', intermediates_only=True)
        return tuple(features)
