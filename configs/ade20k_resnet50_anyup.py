# Backbone swap: a CNN, ResNet-50 layer3 (stride 16, 1024 channels); the same AnyUp checkpoint.
_base_ = ['./ade20k_dinov2_anyup.py']
# https://huggingface.co/timm/resnet50.a1_in1k -> model.safetensors
backbone_weights = 'checkpoints/resnet50.a1_in1k.safetensors'
model = dict(
    backbone=dict(model_name='resnet50.a1_in1k', pretrained=backbone_weights, out_indices=(3,),
                  norm=False),
    decode_head=dict(in_channels=1024))
