"""Metrics registered in mmseg's METRICS."""
from .crop_consistency_metric import CropConsistencyMetric

__all__ = ['CropConsistencyMetric']
