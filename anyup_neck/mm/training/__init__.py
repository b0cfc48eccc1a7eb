"""Training AnyUp itself (crop-consistency objective): model, data, metric, hooks.

Importing this package registers ``AnyUpTrainer`` (MODELS), ``ImageFolderDataset`` and
``SyntheticImageFolder`` (DATASETS), the pipeline transforms (TRANSFORMS),
``CropConsistencyMetric`` (METRICS) and ``ExportUpsamplerHook``, ``ValidateBeforeTrainHook``
(HOOKS) in mmseg's registries.
"""
from .augment import AUGMENTATIONS, StrongAugment
from .dataset import ImageFolderDataset, list_images
from .export import save_upsampler, upsampler_state_dict
from .geometry import CropGeometry, take_windows
from .hooks import ExportUpsamplerHook, ValidateBeforeTrainHook
from .losses import cos_mse, input_consistency_loss, self_consistency_loss
from .metric import CropConsistencyMetric
from .synthetic import SyntheticImageFolder, write_synthetic_images
from .trainer import AnyUpTrainer, imagenet_normalise
from .transforms import (LoadImageRGB, PackImage, RandomHorizontalFlip, ResizeCoverCrop,
                         UnreadableImageError)

__all__ = ['AnyUpTrainer', 'imagenet_normalise', 'CropGeometry', 'take_windows', 'cos_mse',
           'self_consistency_loss', 'input_consistency_loss', 'StrongAugment', 'AUGMENTATIONS',
           'ImageFolderDataset', 'list_images', 'SyntheticImageFolder',
           'write_synthetic_images', 'LoadImageRGB', 'ResizeCoverCrop', 'RandomHorizontalFlip',
           'PackImage', 'UnreadableImageError', 'CropConsistencyMetric', 'ExportUpsamplerHook',
           'ValidateBeforeTrainHook', 'upsampler_state_dict', 'save_upsampler']
