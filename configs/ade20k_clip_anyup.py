# Backbone swap: OpenAI CLIP ViT-B/16 (768 channels, CLIP normalisation); the same AnyUp
# checkpoint (it is channel-agnostic).
_base_ = ['./ade20k_dinov2_anyup.py']
# https://huggingface.co/timm/vit_base_patch16_clip_224.openai -> open_clip_model.safetensors
backbone_weights = 'checkpoints/vit_base_patch16_clip_224.openai.safetensors'
model = dict(
    # = TimmBackbone('vit_base_patch16_clip_224.openai').mean / .std
    data_preprocessor=dict(mean=[122.7709, 116.7460, 104.0937],
                           std=[68.5005, 66.6322, 70.3232]),
    backbone=dict(model_name='vit_base_patch16_clip_224.openai', pretrained=backbone_weights,
                  norm=False),
    decode_head=dict(in_channels=768))
