# Cityscapes (19 classes) linear probe, DINOv2 ViT-S/14 + AnyUp, slide inference on 896x448.
_base_ = [
    './_base_/models/anyup_linear.py', './_base_/datasets/cityscapes_448.py',
    './_base_/default_runtime.py', './_base_/schedules/probe_40k.py'
]
# https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth
backbone_weights = 'checkpoints/dinov2_vits14_pretrain.pth'
# https://github.com/wimmerth/anyup/releases/download/checkpoint_v2/anyup_multi_backbone.pth
anyup_weights = 'checkpoints/anyup_multi_backbone.pth'
model = dict(
    backbone=dict(pretrained=backbone_weights),
    neck=dict(init_cfg=dict(type='Pretrained', checkpoint=anyup_weights)),
    decode_head=dict(num_classes=19))
default_hooks = dict(checkpoint=dict(save_best='mIoU', rule='greater'))
