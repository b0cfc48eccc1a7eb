# Backbone swap: DINOv3 ViT-S+/16 (patch 16: 448 / 16 = 28 tokens a side); the same AnyUp
# checkpoint.
_base_ = ['./ade20k_dinov2_anyup.py']
# timm weights (license-gated): https://huggingface.co/timm/vit_small_plus_patch16_dinov3.lvd1689m
#   -> model.safetensors; Meta's original .pth files load too (timm converts them).
backbone_weights = 'checkpoints/vit_small_plus_patch16_dinov3.lvd1689m.safetensors'
model = dict(backbone=dict(model_name='vit_small_plus_patch16_dinov3.lvd1689m',
                           pretrained=backbone_weights))
