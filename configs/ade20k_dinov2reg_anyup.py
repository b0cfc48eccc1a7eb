# Backbone swap: DINOv2 ViT-S/14 with 4 registers; the same AnyUp checkpoint.
_base_ = ['./ade20k_dinov2_anyup.py']
# https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_reg4_pretrain.pth
backbone_weights = 'checkpoints/dinov2_vits14_reg4_pretrain.pth'
model = dict(backbone=dict(model_name='vit_small_patch14_reg4_dinov2', pretrained=backbone_weights))
