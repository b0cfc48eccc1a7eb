"""OpenMMLab glue: the only part of anyup_neck importing mmengine / mmseg.

Organised by mmseg's roles: ``models`` (backbones, necks, heads, segmentors, the
upsampler-training model and its losses), ``datasets`` (+ ``transforms``), ``engine`` (hooks,
optimizer wrappers, CPU-only distributed training, upsampler export) and ``evaluation``
(metrics). Importing it registers every module below into mmseg's registries. ``compat``
comes first: it makes ``mmseg`` importable on mmcv-lite and lets torch load Runner
checkpoints safely.
"""
from . import compat  # noqa: F401  (must run before anything imports mmseg)
from .datasets import ImageFolderDataset, ShapesDataset, SyntheticImageFolder
from .engine import (CPUAmpOptimWrapper, CPUDistributedDataParallel, ExportUpsamplerHook,
                     TrainableParamsOptimWrapperConstructor, ValidateBeforeTrainHook)
from .evaluation import CropConsistencyMetric
from .models import (AnyUpCropConsistency, AnyUpDepthEstimator, AnyUpEncoderDecoder, AnyUpNeck,
                     BilinearNeck, DPTDepthHead, DPTPyramidHead, LinearHead, TimmBackbone)

__all__ = ['TimmBackbone', 'AnyUpNeck', 'BilinearNeck', 'AnyUpEncoderDecoder',
           'AnyUpDepthEstimator', 'LinearHead', 'DPTPyramidHead', 'DPTDepthHead',
           'AnyUpCropConsistency', 'ShapesDataset', 'ImageFolderDataset', 'SyntheticImageFolder',
           'TrainableParamsOptimWrapperConstructor', 'CPUAmpOptimWrapper',
           'CPUDistributedDataParallel', 'ExportUpsamplerHook', 'ValidateBeforeTrainHook',
           'CropConsistencyMetric']
