# ADE20K linear probe of frozen DINOv2 ViT-S/14 features upsampled to full resolution by the
# frozen AnyUp multi-backbone checkpoint. mIoU on ADE20K val.
#   python tools/train.py configs/ade20k_dinov2_anyup.py
_base_ = [
    './_base_/models/anyup_linear.py', './_base_/datasets/ade20k_448.py',
    './_base_/default_runtime.py', './_base_/schedules/probe_40k.py'
]
# Weights (local paths; URLs are fetched once into the torch hub cache for AnyUp only):
# DINOv2 ViT-S/14: https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth
#   (or timm's https://huggingface.co/timm/vit_small_patch14_dinov2.lvd142m model.safetensors)
backbone_weights = 'checkpoints/dinov2_vits14_pretrain.pth'
# AnyUp: https://github.com/wimmerth/anyup/releases/download/checkpoint_v2/anyup_multi_backbone.pth
anyup_weights = 'checkpoints/anyup_multi_backbone.pth'
model = dict(
    backbone=dict(pretrained=backbone_weights),
    neck=dict(init_cfg=dict(type='Pretrained', checkpoint=anyup_weights)),
    decode_head=dict(num_classes=150))
default_hooks = dict(checkpoint=dict(save_best='mIoU', rule='greater'))
