"""Evaluation metrics registered in mmseg's METRICS."""
from .metrics import CropConsistencyMetric

__all__ = ['CropConsistencyMetric']
