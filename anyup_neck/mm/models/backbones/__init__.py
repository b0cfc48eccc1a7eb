"""Backbones registered in mmseg's MODELS."""
from .timm_backbone import TimmBackbone

__all__ = ['TimmBackbone']
