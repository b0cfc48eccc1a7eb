# Demo depth (NYUv2 layout): ViT-Tiny blocks 1-4 -> AnyUp pyramid -> DPT depth head; RMSE/delta1.
_base_ = [
    '../_base_/models/demo_vit_anyup_linear.py', '../_base_/datasets/demo_shapes_depth.py',
    '../_base_/default_runtime.py', '../_base_/schedules/demo_cpu.py'
]
env_cfg = dict(dist_cfg=dict(backend='gloo'))
model = dict(
    type='AnyUpDepthEstimator',
    data_preprocessor=dict(seg_pad_val=0),
    backbone=dict(out_indices=(0, 1, 2, 3)),
    neck=dict(in_index=(0, 1, 2, 3), out_strides=(4, 8, 16, 32)),
    decode_head=dict(
        _delete_=True,
        type='DPTDepthHead',
        in_channels=[192, 192, 192, 192],
        in_index=[0, 1, 2, 3],
        reassemble_channels=(24, 48, 96, 192),
        channels=32,
        max_depth=10.0,
        norm_cfg=dict(type='BN'),
        dropout_ratio=0.0,
        loss_decode=dict(type='SiLogLoss')))
