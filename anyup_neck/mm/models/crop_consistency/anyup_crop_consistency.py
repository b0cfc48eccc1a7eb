"""``AnyUpCropConsistency``: AnyUp with frozen backbones, whose loss is the crop-consistency
objective (the model mmengine's Runner trains to train the upsampler).

Paper Sec. 4.3 and App. C. Per batch of full images (``image_size``, 448 px), with one
backbone drawn for the step:

1. p = backbone(image downsized to ``input_size``), on the feature grid (224 / P);
2. AnyUp upsamples p, guided by the downsized image, to the output grid (448 / P = 2x);
3. K = ``num_crops`` patch-aligned crops of ``crop_size`` are cut from the full image and go
   through the backbone: their features are the targets for the output cells under them.

loss = cos-MSE(output under the crops, targets)
       + ``self_consistency_weight`` x cos-MSE(upsampling guided by a strongly augmented image
                                              at ``input_size``, the clean one, detached)
       + ``input_consistency_weight`` x cos-MSE(output area-downsampled to p's grid, p)

Backbones see images in their own normalisation (``TimmBackbone.normalise``) and run under
``no_grad`` in eval mode; AnyUp's guidance image is ImageNet-normalised
(as :func:`anyup_neck.upsampler.imagenet_normalise` does it). Checkpoints hold the
upsampler (``upsampler.*``, the official key names under that prefix) and the step counter,
not the frozen backbones, which are rebuilt from their configs.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.dist import get_rank
from mmengine.model import BaseModel
from mmseg.registry import MODELS
from torch import nn

from ....upsampler import IMAGENET_MEAN, IMAGENET_STD, AnyUp, ChannelNormalisation
from ..losses import cos_mse, input_consistency_loss, self_consistency_loss
from .crop_geometry import CropGeometry, take_windows
from .strong_augment import StrongAugment

_TRAIN, _VAL = 1, 0   # first word of the random seed: which stream


@dataclass
class CropSample:
    """One batch through one backbone and the upsampler (shapes for B images, K crops)."""

    small: torch.Tensor      # (B, 3, *input_size) downsized images in [0, 1]
    features: torch.Tensor   # (B, C, *feature_grid) input features p
    encoding: torch.Tensor   # AnyUp's encoding of the ImageNet-normalised ``small``
    upsampled: torch.Tensor  # (B, C, *output_grid)
    origins: torch.Tensor    # (B, K, 2) crop corners in output cells
    predicted: torch.Tensor  # (B * K, C, *crop_grid) upsampled cells under the crops
    targets: torch.Tensor    # (B * K, C, *crop_grid) backbone features of the crops


def _drop_backbones(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    """state_dict post-hook: leave the frozen backbones out of checkpoints."""
    for key in [k for k in state_dict if k.startswith(prefix + 'backbones.')]:
        del state_dict[key]


def _fill_backbones(module: 'AnyUpCropConsistency', state_dict: dict, prefix: str, *args) -> None:
    """load_state_dict pre-hook: take the backbones' weights from the built modules."""
    for key, value in module.backbones.state_dict(prefix=prefix + 'backbones.').items():
        state_dict.setdefault(key, value)


def _read_step(module: 'AnyUpCropConsistency', incompatible_keys) -> None:
    module._steps = int(module.step)


def freeze_unused_parameters(upsampler: AnyUp) -> list[str]:
    """Freeze the parameters AnyUp's forward never uses; return their names.

    These are the official model's value/output attention projections, kept in the
    state_dict for checkpoint compatibility. Found by one tiny backward pass rather than by
    name. Frozen, they stay exactly as loaded, and DDP needs no unused-parameter search.
    """
    with torch.enable_grad():
        upsampler(torch.zeros(1, upsampler.in_channels, 8, 8), torch.ones(1, 2, 2, 2),
                  (4, 4)).sum().backward()
    unused = [name for name, p in upsampler.named_parameters() if p.grad is None]
    for name, p in upsampler.named_parameters():
        p.grad = None
        p.requires_grad_(name not in unused)
    return unused


def _non_negative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f'{name}: expected a non-negative number, got {value!r}')
    return float(value)


@MODELS.register_module()
class AnyUpCropConsistency(BaseModel):
    """AnyUp (trainable) + frozen backbones by name; ``loss``/``predict`` for mmengine.

    Args:
        backbones: name -> backbone config (``type`` defaults to ``'TimmBackbone'``): one
            entry, or several for multi-backbone training (one drawn uniformly per step; patch
            sizes and channel counts may differ). Each must give one feature map and have
            ``patch_size`` and ``normalise`` like ``TimmBackbone``.
        upsampler: ``AnyUp`` arguments; default ``dict(lfu_mode='paper')`` (the
            channel-order-invariant LFU, meant for upsamplers trained here).
        image_size, input_size, crop_size: see :class:`CropGeometry` (448, 224, 224).
        num_crops: K crops per image (4).
        self_consistency_weight, input_consistency_weight: loss weights (0.1, 0.1); 0 turns
            a term off.
        augment: ``StrongAugment`` arguments (``strength``, ``num_ops``, ``ops``).
        seed: seed of the crop positions, backbone choice and augmentations; each step's
            draws depend only on (seed, step, rank), so a resumed run repeats them exactly.

    Inputs: ``inputs`` (B, 3, *image_size) uint8 RGB (what ``PackImage`` gives).
    """

    def __init__(self, backbones: Mapping[str, dict], upsampler: dict | None = None,
                 image_size=448, input_size=224, crop_size=224, num_crops: int = 4,
                 self_consistency_weight: float = 0.1, input_consistency_weight: float = 0.1,
                 augment: dict | None = None, seed: int = 0,
                 data_preprocessor: dict | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if not isinstance(backbones, Mapping) or not backbones:
            raise ValueError(f'backbones: expected a non-empty dict name -> backbone config, '
                             f'got {backbones!r}')
        if isinstance(num_crops, bool) or not isinstance(num_crops, int) or num_crops < 1:
            raise ValueError(f'num_crops: expected a positive int, got {num_crops!r}')
        self.num_crops, self.seed = num_crops, int(seed)
        self.self_consistency_weight = _non_negative('self_consistency_weight',
                                                     self_consistency_weight)
        self.input_consistency_weight = _non_negative('input_consistency_weight',
                                                      input_consistency_weight)
        self.augment = StrongAugment(**(augment or {}))
        self.backbones = nn.ModuleDict()
        self.geometries: dict[str, CropGeometry] = {}
        for name, cfg in backbones.items():
            self.backbones[name], self.geometries[name] = self._build_backbone(
                name, cfg, image_size, input_size, crop_size)
        self.backbones.requires_grad_(False).eval()
        self.upsampler = AnyUp(**{'lfu_mode': 'paper', **(upsampler or {})})
        self.guidance = ChannelNormalisation(IMAGENET_MEAN, IMAGENET_STD)
        freeze_unused_parameters(self.upsampler)
        self.register_buffer('step', torch.zeros((), dtype=torch.long))
        self._steps = 0  # the host's copy of ``step`` (reading the buffer would wait for a GPU)
        self.register_state_dict_post_hook(_drop_backbones)
        self.register_load_state_dict_pre_hook(_fill_backbones)
        self.register_load_state_dict_post_hook(_read_step)

    @staticmethod
    def _build_backbone(name: str, cfg: dict, image_size, input_size,
                        crop_size) -> tuple[nn.Module, CropGeometry]:
        """Build one backbone and its geometry; errors name ``backbones[name]``."""
        try:
            backbone = MODELS.build({'type': 'TimmBackbone', **cfg})
            outputs = len(backbone.out_channels)
            if outputs != 1:
                raise ValueError(f'expected one output feature map (out_indices of length 1), '
                                 f'got {outputs}')
            geometry = CropGeometry(image_size, input_size, crop_size, backbone.patch_size)
        except (ValueError, KeyError, TypeError, FileNotFoundError) as err:
            raise type(err)(f'backbones[{name!r}]: {err}') from err
        return backbone, geometry

    def train(self, mode: bool = True) -> 'AnyUpCropConsistency':
        """Switch the upsampler's mode; the frozen backbones always stay in eval mode."""
        super().train(mode)
        self.backbones.eval()
        return self

    # -- pieces ---------------------------------------------------------------------------
    def _generator(self, *words: int) -> torch.Generator:
        seed = np.random.SeedSequence([self.seed, *words]).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(seed))

    def _images(self, inputs: object) -> torch.Tensor:
        """uint8 (B, 3, *image_size) -> float RGB in [0, 1]."""
        expected = next(iter(self.geometries.values())).image_size
        if (not isinstance(inputs, torch.Tensor) or inputs.dtype != torch.uint8
                or inputs.dim() != 4 or inputs.shape[1] != 3
                or tuple(inputs.shape[-2:]) != expected):
            got = (f'{inputs.dtype} {tuple(inputs.shape)}' if isinstance(inputs, torch.Tensor)
                   else type(inputs).__name__)
            raise ValueError(f'inputs: expected uint8 images (B, 3, {expected[0]}, '
                             f'{expected[1]}) (the pipeline size must equal image_size), '
                             f'got {got}')
        return inputs.float() / 255

    @torch.no_grad()
    def _features(self, name: str, images: torch.Tensor) -> torch.Tensor:
        """Backbone ``name`` on RGB [0, 1] images, in its own normalisation: (B, C, h, w)."""
        backbone = self.backbones[name]
        return backbone(backbone.normalise(images))[0]

    def _crop_sample(self, name: str, images: torch.Tensor,
                     generator: torch.Generator) -> CropSample:
        geometry = self.geometries[name]
        small = F.interpolate(images, geometry.input_size, mode='bilinear', antialias=True,
                              align_corners=False)
        origins = geometry.sample_origins(images.shape[0], self.num_crops, generator)
        crops = take_windows(images, origins * geometry.patch_size, geometry.crop_size)
        features = self._features(name, small)
        targets = self._features(name, crops)
        encoding = self.upsampler.encode_image(self.guidance(small))
        upsampled = self.upsampler.upsample(encoding, features, geometry.output_grid)
        predicted = take_windows(upsampled, origins, geometry.crop_grid)
        return CropSample(small, features, encoding, upsampled, origins, predicted, targets)

    # -- mmengine API ---------------------------------------------------------------------
    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = 'loss'):
        """``mode='loss'``: dict of loss terms; ``'predict'``: per-image validation metrics."""
        if mode == 'loss':
            return self.loss(inputs)
        if mode == 'predict':
            return self.predict(inputs)
        raise ValueError(f"mode: expected 'loss' or 'predict', got {mode!r}")

    def loss(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """One training step's loss terms (weighted; mmengine sums the ``loss_*`` entries)."""
        images = self._images(inputs)
        generator = self._generator(_TRAIN, self._steps, get_rank())
        self._steps += 1
        self.step.fill_(self._steps)
        names = list(self.backbones)
        name = names[int(torch.randint(len(names), (), generator=generator))]
        sample = self._crop_sample(name, images, generator)
        losses = {'loss_crop': cos_mse(sample.predicted, sample.targets)}
        if self.self_consistency_weight:
            size = self.geometries[name].input_size
            augmented = self.guidance(self.augment(sample.small, generator))
            guided = self.upsampler(augmented, sample.features, size)
            with torch.no_grad():
                clean = self.upsampler.upsample(sample.encoding, sample.features, size)
            losses['loss_self_consistency'] = (self.self_consistency_weight
                                               * self_consistency_loss(guided, clean))
        if self.input_consistency_weight:
            losses['loss_input_consistency'] = (self.input_consistency_weight
                                                * input_consistency_loss(sample.upsampled,
                                                                         sample.features))
        return losses

    def predict(self, inputs: torch.Tensor) -> list[dict[str, float]]:
        """Held-out crop cos-MSE per image and backbone, for AnyUp and for bilinear upsampling.

        Crop positions come from a fixed seed, so every evaluation sees the same crops.
        Returns one dict per image: ``{'<backbone>/anyup': .., '<backbone>/bilinear': ..}``.
        """
        images = self._images(inputs)
        generator = self._generator(_VAL)
        results: list[dict[str, float]] = [{} for _ in range(images.shape[0])]
        for name, geometry in self.geometries.items():
            sample = self._crop_sample(name, images, generator)
            bilinear = F.interpolate(sample.features, geometry.output_grid, mode='bilinear',
                                     align_corners=False)
            for method, predicted in (('anyup', sample.predicted),
                                      ('bilinear', take_windows(bilinear, sample.origins,
                                                                geometry.crop_grid))):
                per_image = cos_mse(predicted, sample.targets, reduction='none')
                per_image = per_image.view(len(results), self.num_crops).mean(1).tolist()
                for result, value in zip(results, per_image):
                    result[f'{name}/{method}'] = value
        return results
