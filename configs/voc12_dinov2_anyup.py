# PASCAL VOC 2012 (21 classes) linear probe, DINOv2 ViT-S/14 + AnyUp.
_base_ = [
    './_base_/models/anyup_linear.py', './_base_/datasets/pascal_voc12_448.py',
    './_base_/default_runtime.py', './_base_/schedules/probe_40k.py'
]
model = dict(decode_head=dict(num_classes=21))
train_cfg = dict(max_iters=20000, val_interval=2000)
default_hooks = dict(checkpoint=dict(interval=2000, save_best='mIoU', rule='greater'))
