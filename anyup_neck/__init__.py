"""anyup_neck: AnyUp feature upsampling for the OpenMMLab ecosystem.

``import anyup_neck`` exposes :class:`AnyUp` and :func:`window_attention` with torch alone, and
registers the mm modules (neck, segmentors, backbones, heads, ...) into the MMEngine/MMSeg
registries when those packages are installed, so that a config's
``custom_imports = dict(imports=['anyup_neck'])`` is all it takes.
"""
from importlib.util import find_spec

from .ops import window_attention
from .upsampler import AnyUp

__all__ = ['AnyUp', 'window_attention']
__version__ = '0.1.0'

if find_spec('mmengine') is not None and find_spec('mmseg') is not None:
    from . import mm  # noqa: F401  (registers modules)
