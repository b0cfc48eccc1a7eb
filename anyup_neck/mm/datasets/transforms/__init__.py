"""Pipeline transforms registered in mmseg's TRANSFORMS."""
from .image_transforms import (LoadImageRGB, PackImage, RandomHorizontalFlip, ResizeCoverCrop,
                               UnreadableImageError)

__all__ = ['LoadImageRGB', 'ResizeCoverCrop', 'RandomHorizontalFlip', 'PackImage',
           'UnreadableImageError']
