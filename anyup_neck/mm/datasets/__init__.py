"""Datasets registered in mmseg's DATASETS (and their transforms), the demo-data generators."""
from .image_folder import ImageFolderDataset, list_images
from .procedural import CLASSES, render_scene, write_demo_datasets
from .shapes_dataset import ShapesDataset
from .synthetic_images import SyntheticImageFolder, write_synthetic_images
from .transforms import (LoadImageRGB, PackImage, RandomHorizontalFlip, ResizeCoverCrop,
                         UnreadableImageError)

__all__ = ['ShapesDataset', 'CLASSES', 'render_scene', 'write_demo_datasets',
           'ImageFolderDataset', 'list_images', 'SyntheticImageFolder', 'write_synthetic_images',
           'LoadImageRGB', 'ResizeCoverCrop', 'RandomHorizontalFlip', 'PackImage',
           'UnreadableImageError']
