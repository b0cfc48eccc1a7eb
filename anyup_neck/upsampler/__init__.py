"""AnyUp as a plain PyTorch module (imports torch only)."""
from .anyup import AnyUp
from .checkpoint import check_state_dict, load_checked, read_state_dict
from .layers import (LFU_MODES, CrossAttentionBlock, LearnedFeatureUnification, ResBlock, RoPE,
                     WindowCrossAttention)
from .normalization import (IMAGENET_MEAN, IMAGENET_STD, ChannelNormalisation,
                            imagenet_normalise)

__all__ = ['AnyUp', 'ResBlock', 'LearnedFeatureUnification', 'RoPE', 'WindowCrossAttention',
           'CrossAttentionBlock', 'LFU_MODES', 'read_state_dict', 'check_state_dict',
           'load_checked']
