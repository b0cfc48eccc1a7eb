# Cityscapes (19 classes), 448x448 crops from images resized to 896x448 (half of 2048x1024
# would be 1024x512; 448 keeps the probing resolution of the other datasets).
# Layout (mmseg standard; https://www.cityscapes-dataset.com, labels converted with mmseg's
# tools/dataset_converters/cityscapes.py):
#   data/cityscapes/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png
#   data/cityscapes/gtFine/{train,val}/<city>/*_gtFine_labelTrainIds.png
_base_ = ['./ade20k_448.py']
dataset_type = 'CityscapesDataset'
data_root = 'data/cityscapes'
crop_size = (448, 448)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(896, 448), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(896, 448), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(
    type=dataset_type, data_root=data_root, pipeline=train_pipeline,
    data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train')))
val_dataloader = dict(dataset=dict(
    type=dataset_type, data_root=data_root, pipeline=test_pipeline,
    data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val')))
test_dataloader = val_dataloader
