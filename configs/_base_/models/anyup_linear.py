# Frozen DINOv2 ViT-S/14 -> frozen AnyUp to image resolution -> linear head (the probing setup
# of AnyUp / JAFAR / FeatUp). Leaf configs set the dataset's num_classes.
#
# Weights: local paths (point them at your files here, or per run with
#   --cfg-options model.backbone.pretrained=... model.neck.init_cfg.checkpoint=...).
# DINOv2 ViT-S/14: https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth
#   (or timm's https://huggingface.co/timm/vit_small_patch14_dinov2.lvd142m model.safetensors)
backbone_weights = 'checkpoints/dinov2_vits14_pretrain.pth'
# AnyUp (a URL works too: downloaded once into the torch hub cache):
#   https://github.com/wimmerth/anyup/releases/download/checkpoint_v2/anyup_multi_backbone.pth
anyup_weights = 'checkpoints/anyup_multi_backbone.pth'
norm_cfg = dict(type='SyncBN', requires_grad=True)  # plain BN when not distributed
data_preprocessor = dict(
    type='SegDataPreProcessor',
    # = TimmBackbone('vit_small_patch14_dinov2').mean / .std (ImageNet, 0-255 scale)
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(448, 448))
model = dict(
    type='AnyUpEncoderDecoder',
    data_preprocessor=data_preprocessor,
    freeze_backbone=True,
    backbone=dict(
        type='TimmBackbone',
        model_name='vit_small_patch14_dinov2',
        pretrained=backbone_weights,
        out_indices=(-1,),
        norm=True),
    neck=dict(
        type='AnyUpNeck',
        in_index=-1,
        out_strides=(1,),  # image resolution
        frozen=True,
        upsampler=dict(),  # the official architecture
        init_cfg=dict(type='Pretrained', checkpoint=anyup_weights)),
    decode_head=dict(
        type='LinearHead',
        in_channels=384,
        in_index=0,
        norm_cfg=norm_cfg,
        dropout_ratio=0.0,
        align_corners=False),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(448, 448), stride=(298, 298)))
