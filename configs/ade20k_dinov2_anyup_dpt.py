# ADE20K with a DPT head on a 4-level pyramid that AnyUp builds from DINOv2 ViT-S/14 blocks
# 3/6/9/12 (frozen backbone and upsampler; the head is trained).
_base_ = [
    './_base_/models/anyup_dpt.py', './_base_/datasets/ade20k_448.py',
    './_base_/default_runtime.py', './_base_/schedules/probe_40k.py'
]
# DINOv2 ViT-S/14: https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth
backbone_weights = 'checkpoints/dinov2_vits14_pretrain.pth'
# AnyUp: https://github.com/wimmerth/anyup/releases/download/checkpoint_v2/anyup_multi_backbone.pth
anyup_weights = 'checkpoints/anyup_multi_backbone.pth'
model = dict(
    backbone=dict(pretrained=backbone_weights),
    neck=dict(init_cfg=dict(type='Pretrained', checkpoint=anyup_weights)),
    decode_head=dict(num_classes=150))
optim_wrapper = dict(optimizer=dict(lr=1e-4))
default_hooks = dict(checkpoint=dict(save_best='mIoU', rule='greater'))
