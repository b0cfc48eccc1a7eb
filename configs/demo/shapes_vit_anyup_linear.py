# `make demo`: procedural shapes (ADE20K layout), random ViT-Tiny + frozen AnyUp + linear head,
# on a CPU in a few minutes. python tools/demo.py runs data generation, training and testing.
_base_ = [
    '../_base_/models/demo_vit_anyup_linear.py', '../_base_/datasets/demo_shapes.py',
    '../_base_/default_runtime.py', '../_base_/schedules/demo_cpu.py'
]
model = dict(decode_head=dict(num_classes=5))
env_cfg = dict(dist_cfg=dict(backend='gloo'))  # CPU demo, also under torchrun
