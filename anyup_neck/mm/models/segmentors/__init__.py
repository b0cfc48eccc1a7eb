"""Segmentors registered in mmseg's MODELS."""
from .image_guided import AnyUpDepthEstimator, AnyUpEncoderDecoder, ImageGuidedMixin

__all__ = ['AnyUpEncoderDecoder', 'AnyUpDepthEstimator', 'ImageGuidedMixin']
