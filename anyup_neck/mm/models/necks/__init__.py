"""Necks registered in mmseg's MODELS: AnyUp and its interpolation baseline."""
from .anyup_neck import AnyUpNeck
from .bilinear_neck import BilinearNeck
from .resampling import ResamplingNeck

__all__ = ['AnyUpNeck', 'BilinearNeck', 'ResamplingNeck']
