# Demo DPT segmentation: ViT-Tiny blocks 1-4 -> AnyUp pyramid (strides 4/8/16/32) -> DPT head.
_base_ = ['./shapes_vit_anyup_linear.py']
model = dict(
    backbone=dict(out_indices=(0, 1, 2, 3)),
    neck=dict(in_index=(0, 1, 2, 3), out_strides=(4, 8, 16, 32)),
    decode_head=dict(
        _delete_=True,
        type='DPTPyramidHead',
        in_channels=[192, 192, 192, 192],
        in_index=[0, 1, 2, 3],
        reassemble_channels=(24, 48, 96, 192),
        channels=32,
        num_classes=5,
        norm_cfg=dict(type='BN'),
        dropout_ratio=0.0,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
