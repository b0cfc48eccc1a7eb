# Frozen DINOv2 ViT-S/14, blocks 3/6/9/12 -> frozen AnyUp to strides 4/8/16/32 (the pyramid a
# DPT head expects, here from a single-stride ViT) -> DPT decoder. The leaf picks the task:
# segmentation (DPTPyramidHead + num_classes) or depth (DPTDepthHead).
_base_ = ['./anyup_linear.py']
model = dict(
    backbone=dict(out_indices=(2, 5, 8, 11)),
    neck=dict(in_index=(0, 1, 2, 3), out_strides=(4, 8, 16, 32)),
    decode_head=dict(
        _delete_=True,
        type='DPTPyramidHead',
        in_channels=[384, 384, 384, 384],
        in_index=[0, 1, 2, 3],
        reassemble_channels=(48, 96, 192, 384),
        channels=256,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        dropout_ratio=0.0,
        align_corners=False))
