# ADE20K linear probe of frozen DINOv2 ViT-S/14 features upsampled to full resolution by the
# frozen AnyUp multi-backbone checkpoint; mIoU on ADE20K val. Weights paths and their URLs:
# _base_/models/anyup_linear.py; dataset layout: _base_/datasets/ade20k_448.py.
#   python tools/train.py configs/ade20k_dinov2_anyup.py
_base_ = [
    './_base_/models/anyup_linear.py', './_base_/datasets/ade20k_448.py',
    './_base_/default_runtime.py', './_base_/schedules/probe_40k.py'
]
model = dict(decode_head=dict(num_classes=150))
default_hooks = dict(checkpoint=dict(save_best='mIoU', rule='greater'))
