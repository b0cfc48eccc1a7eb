# COCO-Stuff 164k (171 classes), 448x448 crops.
# Layout (mmseg standard; images from https://cocodataset.org, stuffthingmaps_trainval2017.zip
# converted with mmseg's tools/dataset_converters/coco_stuff164k.py):
#   data/coco_stuff164k/images/{train2017,val2017}/*.jpg
#   data/coco_stuff164k/annotations/{train2017,val2017}/*_labelTrainIds.png
_base_ = ['./ade20k_448.py']
dataset_type = 'COCOStuffDataset'
data_root = 'data/coco_stuff164k'
train_dataloader = dict(dataset=dict(
    type=dataset_type, data_root=data_root,
    data_prefix=dict(img_path='images/train2017', seg_map_path='annotations/train2017')))
val_dataloader = dict(dataset=dict(
    type=dataset_type, data_root=data_root,
    data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017')))
test_dataloader = val_dataloader
