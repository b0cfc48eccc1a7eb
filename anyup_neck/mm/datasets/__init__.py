"""Datasets registered in mmseg's DATASETS, and the procedural demo-data generator."""
from .procedural import CLASSES, render_scene, write_demo_datasets
from .shapes_dataset import ShapesDataset

__all__ = ['ShapesDataset', 'CLASSES', 'render_scene', 'write_demo_datasets']
