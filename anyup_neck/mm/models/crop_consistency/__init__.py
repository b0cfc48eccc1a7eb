"""The model that trains AnyUp with the crop-consistency objective, and its parts."""
from .anyup_crop_consistency import AnyUpCropConsistency
from .crop_geometry import CropGeometry, take_windows
from .strong_augment import AUGMENTATIONS, StrongAugment

__all__ = ['AnyUpCropConsistency', 'CropGeometry', 'take_windows', 'StrongAugment',
           'AUGMENTATIONS']
