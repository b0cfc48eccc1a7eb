# Multi-backbone AnyUp (the released `anyup_multi_backbone.pth` recipe): every step draws one
# of five frozen backbones (patch 14 and 16, 384 and 768 channels, different normalisations);
# otherwise the paper settings of anyup_dinov2_imagenet.py. 448 and 224 are multiples of both
# patch sizes, so every backbone's crops are patch-aligned.
_base_ = ['./anyup_dinov2_imagenet.py']

_vit = dict(type='TimmBackbone', norm=True)
model = dict(backbones=dict(
    dinov2_s=dict(_vit, model_name='vit_small_patch14_dinov2.lvd142m',
                  pretrained='checkpoints/dinov2_vits14_pretrain.pth'),
    dinov2_reg_s=dict(_vit, model_name='vit_small_patch14_reg4_dinov2.lvd142m',
                      pretrained='checkpoints/dinov2_vits14_reg4_pretrain.pth'),
    clip_b=dict(_vit, model_name='vit_base_patch16_clip_224.openai',
                pretrained='checkpoints/vit_base_patch16_clip_224.openai.safetensors'),
    siglip_b=dict(_vit, model_name='vit_base_patch16_siglip_224.v2_webli',
                  pretrained='checkpoints/vit_base_patch16_siglip_224.v2_webli.safetensors'),
    vit_b=dict(_vit, model_name='vit_base_patch16_224.augreg2_in21k_ft_in1k',
               pretrained='checkpoints/vit_base_patch16_224.augreg2_in21k_ft_in1k.safetensors'),
))
