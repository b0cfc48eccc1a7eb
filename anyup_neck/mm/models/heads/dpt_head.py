"""DPT decoder (reassemble + fusion) for a feature pyramid, for segmentation and depth.

mmseg's ``DPTHead`` reassembles a single-stride ViT itself (class-token readout, transposed
convs to strides 4/8/16/32). With ``AnyUpNeck(out_strides=(4, 8, 16, 32))`` the neck already
delivers that pyramid, so reassembling reduces to a 1x1 projection per level; the fusion
stages are mmseg's own ``FeatureFusionBlock``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.decode_heads.dpt_head import FeatureFusionBlock
from mmseg.models.decode_heads.vpd_depth_head import VPDDepthHead
from mmseg.registry import MODELS
from torch import nn


class DPTDecoder(BaseModule):
    """Pyramid (fine to coarse) -> fused map at half the finest stride.

    Args:
        in_channels: channels of each level, finest first.
        reassemble_channels: 1x1 projection width of each level.
        channels: width of the fusion stages and of the output.
        act_cfg, norm_cfg: of the residual units and the final 3x3 conv.

    Shapes: levels (B, C_i, H_i, W_i), H_i roughly halving -> (B, channels, 2 H_0, 2 W_0).
    """

    def __init__(self, in_channels: Sequence[int], reassemble_channels: Sequence[int],
                 channels: int, act_cfg: dict, norm_cfg: dict | None) -> None:
        super().__init__()
        if len(reassemble_channels) != len(in_channels):
            raise ValueError(f'reassemble_channels: expected one width per input level '
                             f'({len(in_channels)}: in_channels={list(in_channels)}), got '
                             f'{list(reassemble_channels)}')
        self.projects = nn.ModuleList(
            ConvModule(c, r, 1, act_cfg=None) for c, r in zip(in_channels, reassemble_channels))
        self.convs = nn.ModuleList(
            ConvModule(r, channels, 3, padding=1, act_cfg=None, bias=False)
            for r in reassemble_channels)
        self.fusion_blocks = nn.ModuleList(
            FeatureFusionBlock(channels, act_cfg, norm_cfg) for _ in in_channels)
        self.fusion_blocks[0].res_conv_unit1 = None  # the coarsest stage has nothing to fuse
        self.project = ConvModule(channels, channels, 3, padding=1, norm_cfg=norm_cfg)

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        x = [conv(project(level)) for level, project, conv
             in zip(levels, self.projects, self.convs)]
        out = self.fusion_blocks[0](x[-1])
        for block, skip in zip(self.fusion_blocks[1:], reversed(x[:-1])):
            out = block(out, skip)
        return self.project(out)


@MODELS.register_module()
class DPTPyramidHead(BaseDecodeHead):
    """DPT segmentation head on a feature pyramid (e.g. ``AnyUpNeck`` strides 4/8/16/32).

    Args:
        reassemble_channels: per-level projection widths (DPT: 96, 192, 384, 768).
        **kwargs: :class:`BaseDecodeHead` arguments; ``in_channels`` and ``in_index`` are
            lists (finest level first), ``channels`` is the fusion width (DPT: 256).

    Shapes: levels -> logits (B, num_classes, 2 H_0, 2 W_0) (resized to the labels by the loss).
    """

    def __init__(self, reassemble_channels: Sequence[int] = (96, 192, 384, 768),
                 **kwargs) -> None:
        super().__init__(input_transform='multiple_select', **kwargs)
        self.decoder = DPTDecoder(self.in_channels, reassemble_channels, self.channels,
                                  self.act_cfg, self.norm_cfg)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.cls_seg(self.decoder(self._transform_inputs(inputs)))


@MODELS.register_module()
class DPTDepthHead(DPTPyramidHead):
    """DPT depth head: the same decoder, one output channel, ``sigmoid * max_depth`` (metres).

    Loss and targets as mmseg's depth heads (``gt_depth_map``, default ``SiLogLoss``).

    Args:
        max_depth: largest predictable depth.
        **kwargs: :class:`DPTPyramidHead` arguments (no ``num_classes``).
    """

    _stack_batch_gt = VPDDepthHead._stack_batch_gt
    loss_by_feat = VPDDepthHead.loss_by_feat

    def __init__(self, max_depth: float = 10.0, loss_decode: dict = dict(type='SiLogLoss'),
                 **kwargs) -> None:
        # threshold only silences BaseDecodeHead's binary-segmentation warning; depth heads
        # never threshold.
        super().__init__(num_classes=1, out_channels=1, threshold=0.5, loss_decode=loss_decode,
                         **kwargs)
        self.max_depth = max_depth

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(super().forward(inputs)) * self.max_depth
