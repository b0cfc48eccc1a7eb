# Demo model (random weights, CPU-sized): a 4-block ViT-Tiny with 8-pixel patches, trained;
# a small frozen AnyUp (qk_dim 32, 16 LFU kernels: random weights need not follow the official
# architecture); a linear head on the full-resolution features.
_base_ = ['./anyup_linear.py']
model = dict(
    # = TimmBackbone('vit_tiny_patch16_224').mean / .std
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5],
                           size=(64, 64)),
    freeze_backbone=False,
    backbone=dict(model_name='vit_tiny_patch16_224', pretrained=None,
                  model_kwargs=dict(patch_size=8, depth=4, img_size=64)),
    neck=dict(upsampler=dict(qk_dim=32, num_heads=4, lfu_basis=16),
              init_cfg=dict(checkpoint=None)),  # random weights
    decode_head=dict(in_channels=192, norm_cfg=dict(type='BN')),
    test_cfg=dict(_delete_=True, mode='whole'))
