"""mmseg segmentors whose ``extract_feat`` hands the input image to image-guided necks.

``AnyUpEncoderDecoder`` / ``AnyUpDepthEstimator`` are mmseg's ``EncoderDecoder`` /
``DepthEstimator`` plus:

- the neck (:class:`~anyup_neck.mm.models.necks.ResamplingNeck`) receives the image the
  backbone saw (in slide inference: the crop), and learns its normalisation from
  ``data_preprocessor``;
- ``freeze_backbone=True``: backbone in eval mode, run without autograd, no ``requires_grad``
  (so :class:`TrainableParamsOptimWrapperConstructor` leaves it out of the optimizer);
- config mistakes that would otherwise surface as shape errors mid-training (neck levels
  the backbone does not have, strides that do not divide the crop, head channels that do
  not match the backbone) raise at build time, naming the argument to fix.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext

import torch
from mmengine.logging import print_log
from mmseg.models.segmentors import DepthEstimator, EncoderDecoder
from mmseg.registry import MODELS


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _backbone_levels(backbone) -> tuple[int | None, list[int] | None]:
    """(number of feature maps, their channels) where the backbone tells, else None."""
    channels = getattr(backbone, 'out_channels', None)
    if isinstance(channels, (list, tuple)):
        return len(channels), list(channels)
    if hasattr(backbone, 'out_indices'):
        return len(_as_list(backbone.out_indices)), None
    return None, None


class ImageGuidedMixin:
    """Image-passing ``extract_feat`` and ``freeze_backbone`` for mmseg segmentors."""

    def _setup_image_guidance(self, freeze_backbone: bool) -> None:
        self.freeze_backbone = freeze_backbone
        self._check_preprocessor_matches_backbone()
        if freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        if not (self.with_neck and getattr(self.neck, 'takes_image', False)):
            return
        if getattr(self.neck, 'image_normalization_set', True) is False:
            self._give_neck_the_input_normalization()
        self._check_shapes()

    def _give_neck_the_input_normalization(self) -> None:
        """Tell the neck how data_preprocessor normalised the image (mean/std, RGB)."""
        preprocessor = self.data_preprocessor
        if not getattr(preprocessor, 'channel_conversion', True):
            print_log('data_preprocessor.bgr_to_rgb is off: images loaded by mmcv are BGR, but '
                      'AnyUpNeck expects RGB guidance; set bgr_to_rgb=True unless your images '
                      'are loaded as RGB', logger='current', level=logging.WARNING)
        if getattr(preprocessor, '_enable_normalize', False):
            mean = preprocessor.mean.flatten().tolist()
            std = preprocessor.std.flatten().tolist()
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        self.neck.set_image_normalization(mean, std)

    def _check_preprocessor_matches_backbone(self) -> None:
        """Warn when data_preprocessor normalises differently from what the backbone expects."""
        preprocessor, backbone = self.data_preprocessor, self.backbone
        if not (hasattr(backbone, 'mean') and getattr(preprocessor, '_enable_normalize', False)):
            return
        actual = (preprocessor.mean.flatten().tolist(), preprocessor.std.flatten().tolist())
        if not all(abs(a - e) < 0.01 for got, want in zip(actual, (backbone.mean, backbone.std))
                   for a, e in zip(got, want)):
            print_log(f'data_preprocessor mean/std {actual} differ from what the backbone '
                      f'expects ({list(backbone.mean)}, {list(backbone.std)}; 0-255 scale); '
                      f'set them to the backbone values unless this is intended',
                      logger='current', level=logging.WARNING)

    def _check_shapes(self) -> None:
        num_levels, backbone_channels = _backbone_levels(self.backbone)
        if num_levels is not None:
            self.neck.check_num_levels(num_levels)
        crop = getattr(self.data_preprocessor, 'size', None)
        if crop is not None:
            divisors = [('neck.out_strides', s) for s in self.neck.out_strides]
            patch = getattr(self.backbone, 'patch_size', None)
            if patch is not None:
                divisors.append(('backbone patch size / stride', patch))
            for name, d in divisors:
                if any(c % d for c in crop):
                    raise ValueError(f'{name}: {d} does not divide the crop size {tuple(crop)} '
                                     f'(data_preprocessor.size); choose a crop size that is a '
                                     f'multiple of it, or strides that divide the crop size')
        if backbone_channels is not None:
            neck_channels = [backbone_channels[level] for level, _ in self.neck.plan()]
            self._check_head_channels(neck_channels)

    def _check_head_channels(self, neck_channels: list[int]) -> None:
        head = self.decode_head
        if not (hasattr(head, 'in_index') and hasattr(head, 'in_channels')):
            return
        indices = _as_list(head.in_index)
        bad = [i for i in indices if not -len(neck_channels) <= i < len(neck_channels)]
        if bad:
            raise ValueError(f'decode_head.in_index: expected indices in '
                             f'[-{len(neck_channels)}, {len(neck_channels)}) (the neck gives '
                             f'{len(neck_channels)} maps), got {head.in_index}')
        expected = [neck_channels[i] for i in indices]
        if _as_list(head.in_channels) != expected:
            expected_cfg = expected if isinstance(head.in_index, (list, tuple)) else expected[0]
            raise ValueError(f'decode_head.in_channels: expected {expected_cfg} (the channels '
                             f'of backbone levels {[l for l, _ in self.neck.plan()]} through the '
                             f'neck), got {head.in_channels}')

    def extract_feat(self, inputs: torch.Tensor, batch_img_metas: list | None = None):
        """(B, 3, H, W) normalised images -> the neck's (or backbone's) feature maps."""
        with torch.no_grad() if self.freeze_backbone else nullcontext():
            x = self.backbone(inputs)
        if self.with_neck:
            x = self.neck(x, inputs) if getattr(self.neck, 'takes_image', False) else self.neck(x)
        return x

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self


@MODELS.register_module()
class AnyUpEncoderDecoder(ImageGuidedMixin, EncoderDecoder):
    """mmseg's ``EncoderDecoder`` for image-guided necks (``AnyUpNeck``, ``BilinearNeck``).

    Args:
        freeze_backbone: keep the backbone fixed (eval mode, no grads, not optimised).
        **kwargs: ``EncoderDecoder`` arguments (backbone, neck, decode_head, ...).
    """

    def __init__(self, freeze_backbone: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self._setup_image_guidance(freeze_backbone)


@MODELS.register_module()
class AnyUpDepthEstimator(ImageGuidedMixin, DepthEstimator):
    """mmseg's ``DepthEstimator`` for image-guided necks; ``test_cfg.mode='slide'`` works.

    (mmseg 1.2.2's ``DepthEstimator.inference`` computes the slide result and then returns
    whole-image inference instead; fixed here.)
    """

    def __init__(self, freeze_backbone: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self._setup_image_guidance(freeze_backbone)

    def inference(self, inputs: torch.Tensor, batch_img_metas: list[dict]) -> torch.Tensor:
        if self.test_cfg.get('mode', 'whole') == 'slide':
            return self.slide_inference(inputs, batch_img_metas)
        return super().inference(inputs, batch_img_metas)
