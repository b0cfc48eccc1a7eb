# Frozen DINOv2 ViT-S/14 -> frozen AnyUp to image resolution -> linear head (the probing setup
# of AnyUp / JAFAR / FeatUp). Leaf configs set the weights paths and the dataset's num_classes.
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
        pretrained=None,
        out_indices=(-1,),
        norm=True),
    neck=dict(
        type='AnyUpNeck',
        in_index=-1,
        out_strides=(1,),  # image resolution
        frozen=True,
        upsampler=dict()),  # the official architecture; weights: init_cfg in the leaf configs
    decode_head=dict(
        type='LinearHead',
        in_channels=384,
        in_index=0,
        num_classes=150,
        norm_cfg=norm_cfg,
        dropout_ratio=0.0,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(448, 448), stride=(298, 298)))
