"""AnyUp's building blocks, one module per block. Module and parameter names follow the
official state_dict.

All maps are NCHW. D is the query/key width (qk_dim), M the LFU basis size. Each layer has one
forward; how it runs (compiled CPU kernels, a GPU formulation, plain PyTorch ops; in pieces,
in place) is decided by the primitives of :mod:`anyup_neck.ops.fused` it calls. A forward's
``overwrite=True`` says that its input is the caller's temporary, which the result may reuse.
"""
from ...ops.fused import adaptive_pool
from .attention import CrossAttentionBlock, WindowCrossAttention
from .encoder import Encoder, ResBlock
from .feature_unification import LFU_MODES, LearnedFeatureUnification
from .rope import RoPE

__all__ = ['ResBlock', 'Encoder', 'LearnedFeatureUnification', 'LFU_MODES', 'RoPE',
           'WindowCrossAttention', 'CrossAttentionBlock', 'adaptive_pool']
