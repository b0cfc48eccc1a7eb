# Demo DPT model: the demo ViT-Tiny's blocks 1-4 -> AnyUp pyramid (strides 4/8/16/32) -> DPT
# decoder (segmentation or depth head chosen by the leaf config).
_base_ = ['./demo_vit_anyup_linear.py']
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
        norm_cfg=dict(type='BN'),
        dropout_ratio=0.0))
