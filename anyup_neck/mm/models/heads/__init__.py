"""Decode heads registered in mmseg's MODELS."""
from .dpt_head import DPTDecoder, DPTDepthHead, DPTPyramidHead
from .linear_head import LinearHead

__all__ = ['LinearHead', 'DPTDecoder', 'DPTPyramidHead', 'DPTDepthHead']
