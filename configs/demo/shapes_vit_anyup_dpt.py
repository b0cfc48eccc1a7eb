# Demo DPT segmentation: ViT-Tiny blocks 1-4 -> AnyUp pyramid (strides 4/8/16/32) -> DPT head.
_base_ = [
    '../_base_/models/demo_vit_anyup_dpt.py', '../_base_/datasets/demo_shapes.py',
    '../_base_/default_runtime.py', '../_base_/schedules/demo_cpu.py'
]
model = dict(decode_head=dict(num_classes=5))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
