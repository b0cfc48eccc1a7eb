# Backbone swap: SigLIP 2 ViT-B/16 (768 channels, mean = std = 0.5); the same AnyUp checkpoint.
_base_ = ['./ade20k_dinov2_anyup.py']
# https://huggingface.co/timm/vit_base_patch16_siglip_224.v2_webli -> model.safetensors
backbone_weights = 'checkpoints/vit_base_patch16_siglip_224.v2_webli.safetensors'
model = dict(
    # = TimmBackbone('vit_base_patch16_siglip_224.v2_webli').mean / .std
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    backbone=dict(model_name='vit_base_patch16_siglip_224.v2_webli', pretrained=backbone_weights),
    decode_head=dict(in_channels=768))
