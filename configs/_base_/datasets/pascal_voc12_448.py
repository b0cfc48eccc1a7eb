# PASCAL VOC 2012 (21 classes incl. background), 448x448 crops.
# Layout (mmseg standard;
# http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar):
#   data/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass}/
#   data/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt
_base_ = ['./ade20k_448.py']
dataset_type = 'PascalVOCDataset'
data_root = 'data/VOCdevkit/VOC2012'
train_dataloader = dict(dataset=dict(
    type=dataset_type, data_root=data_root,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
    ann_file='ImageSets/Segmentation/train.txt'))
val_dataloader = dict(dataset=dict(
    type=dataset_type, data_root=data_root,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
    ann_file='ImageSets/Segmentation/val.txt'))
test_dataloader = val_dataloader
