"""OpenMMLab glue: the only part of anyup_neck importing mmengine / mmseg.

Importing it registers every module below into mmseg's registries. ``compat`` comes first:
it makes ``mmseg`` importable on mmcv-lite and lets torch load Runner checkpoints safely.
"""
from . import compat  # noqa: F401  (must run before anything imports mmseg)
from .backbones import TimmBackbone
from .datasets import ShapesDataset
from .distributed import CPUDistributedDataParallel
from .heads import DPTDepthHead, DPTPyramidHead, LinearHead
from .necks import AnyUpNeck, BilinearNeck
from .optim import CPUAmpOptimWrapper, TrainableParamsOptimWrapperConstructor
from .segmentors import AnyUpDepthEstimator, AnyUpEncoderDecoder

__all__ = ['TimmBackbone', 'AnyUpNeck', 'BilinearNeck', 'AnyUpEncoderDecoder',
           'AnyUpDepthEstimator', 'LinearHead', 'DPTPyramidHead', 'DPTDepthHead',
           'ShapesDataset', 'TrainableParamsOptimWrapperConstructor', 'CPUAmpOptimWrapper',
           'CPUDistributedDataParallel']
from . import training  # noqa: F401
