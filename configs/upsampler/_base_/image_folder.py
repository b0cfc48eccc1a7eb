# Image-folder data for upsampler training: any tree of JPEG/PNG files (ImageNet's layout
# works as is; labels are ignored). Images are resized to cover `image_size` and cropped to it.
image_size = 448
train_root = 'data/imagenet/train'
val_root = 'data/imagenet/val'

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
    batch_size=4, num_workers=4, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ImageFolderDataset', data_root=train_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    # 500 held-out images are plenty for the crop metric and keep validation cheap.
    dataset=dict(type='ImageFolderDataset', data_root=val_root, pipeline=val_pipeline,
                 indices=500))
