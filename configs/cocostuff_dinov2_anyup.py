# COCO-Stuff 164k (171 classes) linear probe, DINOv2 ViT-S/14 + AnyUp.
_base_ = [
    './_base_/models/anyup_linear.py', './_base_/datasets/coco_stuff164k_448.py',
    './_base_/default_runtime.py', './_base_/schedules/probe_40k.py'
]
model = dict(decode_head=dict(num_classes=171))
default_hooks = dict(checkpoint=dict(save_best='mIoU', rule='greater'))
