# Minutes-on-a-CPU demo of upsampler training: a small randomly initialised ViT (patch 8) on
# generated scenes (written to data/upsampler_demo on first use), 128 px images, 64 px input
# and crops, a small AnyUp. The log shows the held-out crop loss of the untrained upsampler
# (iteration 0), then falling; `crop/vit/bilinear` is the bilinear reference on the same crops.
#
#   python tools/train_upsampler.py configs/upsampler/demo_synthetic.py
_base_ = ['./_base_/upsampler_runtime.py']

image_size, crop_size = 128, 64
train_pipeline = [
    dict(type='LoadImageRGB'),
    dict(type='ResizeCoverCrop', size=image_size, random_crop=True),
    dict(type='RandomHorizontalFlip', prob=0.5),
    dict(type='PackImage'),
]
val_pipeline = [
    dict(type='LoadImageRGB'),
    dict(type='ResizeCoverCrop', size=image_size, random_crop=False),
    dict(type='PackImage'),
]
train_dataloader = dict(
    batch_size=4, num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='SyntheticImageFolder', data_root='data/upsampler_demo/train',
                 num_images=256, image_size=160, seed=0, min_size=crop_size,
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='SyntheticImageFolder', data_root='data/upsampler_demo/val',
                 num_images=16, image_size=160, seed=1, min_size=crop_size,
                 pipeline=val_pipeline))

# Random-init ViT: 4 blocks of width 96, patch 8 (a 64 px input gives 8 x 8 features).
vit = dict(type='TimmBackbone', model_name='vit_tiny_patch16_224', norm=True,
           model_kwargs=dict(patch_size=8, embed_dim=96, depth=4, num_heads=3, img_size=64))
model = dict(
    type='AnyUpCropConsistency',
    backbones=dict(vit=vit),
    upsampler=dict(qk_dim=32, num_heads=4, window_ratio=0.1, lfu_basis=32, lfu_mode='paper'),
    image_size=image_size, input_size=64, crop_size=crop_size, num_crops=4,
    self_consistency_weight=0.1, input_consistency_weight=0.1,
    augment=dict(strength=1.0, num_ops=3))

optim_wrapper = dict(optimizer=dict(type='AdamW', lr=2e-3))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=300, val_interval=50)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=100, max_keep_ckpts=2))
