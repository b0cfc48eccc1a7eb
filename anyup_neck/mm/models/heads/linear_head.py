"""The linear probe of the feature-upsampling papers, as an mmseg decode head."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from mmcv.cnn import build_norm_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from torch import nn


@MODELS.register_module()
class LinearHead(BaseDecodeHead):
    """Per-pixel linear classifier: optional norm, dropout, 1x1 conv on the given features.

    With ``AnyUpNeck(out_strides=(1,))`` the features are already at image resolution, so the
    head is exactly a linear probe of the upsampled features (as in AnyUp / JAFAR / FeatUp).
    ``channels`` is the input width (no hidden layer); several levels can be concatenated with
    ``input_transform='resize_concat'``.

    Args:
        in_channels: input channels (a list with ``resize_concat``).
        **kwargs: :class:`BaseDecodeHead` arguments (``num_classes``, ``norm_cfg`` (e.g.
            ``dict(type='SyncBN')`` as in DINOv2's linear head; None = no norm),
            ``dropout_ratio``, ``loss_decode``, ``in_index``, ...).

    Shapes: features (B, C, H, W) -> logits (B, num_classes, H, W).
    """

    def __init__(self, in_channels: int | Sequence[int], **kwargs) -> None:
        if 'channels' in kwargs:
            raise TypeError('LinearHead: channels is the input width (sum of in_channels); '
                            'do not set it')
        width = sum(in_channels) if isinstance(in_channels, (list, tuple)) else in_channels
        super().__init__(in_channels=in_channels, channels=width, **kwargs)
        self.norm = build_norm_layer(self.norm_cfg, width)[1] if self.norm_cfg else nn.Identity()

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.cls_seg(self.norm(self._transform_inputs(inputs)))
