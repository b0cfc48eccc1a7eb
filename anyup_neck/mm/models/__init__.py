"""Models registered in mmseg's MODELS: the segmentation/depth stack and upsampler training."""
from .backbones import TimmBackbone
from .crop_consistency import AnyUpCropConsistency
from .heads import DPTDepthHead, DPTPyramidHead, LinearHead
from .necks import AnyUpNeck, BilinearNeck, ResamplingNeck
from .segmentors import AnyUpDepthEstimator, AnyUpEncoderDecoder

__all__ = ['TimmBackbone', 'AnyUpNeck', 'BilinearNeck', 'ResamplingNeck', 'LinearHead',
           'DPTPyramidHead', 'DPTDepthHead', 'AnyUpEncoderDecoder', 'AnyUpDepthEstimator',
           'AnyUpCropConsistency']
