# NYUv2 depth: frozen DINOv2 ViT-S/14 blocks 3/6/9/12 -> frozen AnyUp pyramid (strides
# 4/8/16/32) -> DPT depth head. RMSE / delta1 (mmseg's DepthMetric) on the NYU test split.
_base_ = [
    './_base_/models/anyup_dpt.py', './_base_/datasets/nyu_448.py',
    './_base_/default_runtime.py', './_base_/schedules/probe_40k.py'
]
# https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth
backbone_weights = 'checkpoints/dinov2_vits14_pretrain.pth'
# https://github.com/wimmerth/anyup/releases/download/checkpoint_v2/anyup_multi_backbone.pth
anyup_weights = 'checkpoints/anyup_multi_backbone.pth'
model = dict(
    type='AnyUpDepthEstimator',
    data_preprocessor=dict(seg_pad_val=0),  # depth 0 = invalid
    backbone=dict(pretrained=backbone_weights),
    neck=dict(init_cfg=dict(type='Pretrained', checkpoint=anyup_weights)),
    decode_head=dict(
        _delete_=True,
        type='DPTDepthHead',
        in_channels=[384, 384, 384, 384],
        in_index=[0, 1, 2, 3],
        reassemble_channels=(48, 96, 192, 384),
        channels=256,
        max_depth=10.0,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        dropout_ratio=0.0,
        align_corners=False,
        loss_decode=dict(type='SiLogLoss')))
optim_wrapper = dict(optimizer=dict(lr=1e-4))
default_hooks = dict(checkpoint=dict(save_best='rmse', rule='less'))
