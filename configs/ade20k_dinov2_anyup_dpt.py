# ADE20K with a DPT head on a 4-level pyramid that AnyUp builds from DINOv2 ViT-S/14 blocks
# 3/6/9/12 (frozen backbone and upsampler; the head is trained).
_base_ = [
    './_base_/models/anyup_dpt.py', './_base_/datasets/ade20k_448.py',
    './_base_/default_runtime.py', './_base_/schedules/probe_40k.py'
]
model = dict(decode_head=dict(num_classes=150))
optim_wrapper = dict(optimizer=dict(lr=1e-4))
default_hooks = dict(checkpoint=dict(save_best='mIoU', rule='greater'))
