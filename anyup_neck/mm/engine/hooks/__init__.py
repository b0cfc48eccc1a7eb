"""Hooks registered in mmseg's HOOKS."""
from .upsampler_hooks import ExportUpsamplerHook, ValidateBeforeTrainHook

__all__ = ['ExportUpsamplerHook', 'ValidateBeforeTrainHook']
