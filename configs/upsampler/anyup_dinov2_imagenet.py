# AnyUp trained as in the paper (Sec. 4.3, App. C): DINOv2 ViT-S/14 features, ImageNet
# images at 448 px, input features from the 224 px image, K = 4 patch-aligned 224 px crops,
# cos-MSE + 0.1 self-consistency + 0.1 input-consistency, AdamW lr 2e-4, batch 4, 100k steps.
#
#   python tools/train_upsampler.py configs/upsampler/anyup_dinov2_imagenet.py \
#       --cfg-options model.backbones.dinov2_s.pretrained=checkpoints/dinov2_vits14_pretrain.pth
_base_ = ['./_base_/upsampler_runtime.py', './_base_/image_folder.py']

# Local weights files (nothing is downloaded): Meta's original release or timm's file.
dinov2_s = dict(type='TimmBackbone', model_name='vit_small_patch14_dinov2.lvd142m',
                pretrained='checkpoints/dinov2_vits14_pretrain.pth', norm=True)

model = dict(
    type='AnyUpCropConsistency',
    backbones=dict(dinov2_s=dinov2_s),
    upsampler=dict(qk_dim=128, num_heads=4, window_ratio=0.1, lfu_basis=128,
                   lfu_kernel_size=5, lfu_mode='paper'),
    image_size={{_base_.image_size}}, input_size=224, crop_size=224, num_crops=4,
    self_consistency_weight=0.1, input_consistency_weight=0.1,
    augment=dict(strength=1.0, num_ops=3))
# AdamW lr 2e-4, 100k iterations, validation and checkpoints every 5k, logs every 50: the
# defaults of _base_/upsampler_runtime.py; batch 4 in _base_/image_folder.py.
