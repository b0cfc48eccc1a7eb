# Cityscapes (19 classes) linear probe, DINOv2 ViT-S/14 + AnyUp, slide inference on 896x448.
_base_ = [
    './_base_/models/anyup_linear.py', './_base_/datasets/cityscapes_448.py',
    './_base_/default_runtime.py', './_base_/schedules/probe_40k.py'
]
model = dict(decode_head=dict(num_classes=19))
default_hooks = dict(checkpoint=dict(save_best='mIoU', rule='greater'))
