# Demo depth (NYUv2 layout): ViT-Tiny blocks 1-4 -> AnyUp pyramid -> DPT depth head; RMSE/delta1.
_base_ = [
    '../_base_/models/demo_vit_anyup_dpt.py', '../_base_/datasets/demo_shapes_depth.py',
    '../_base_/default_runtime.py', '../_base_/schedules/demo_cpu.py'
]
model = dict(
    type='AnyUpDepthEstimator',
    data_preprocessor=dict(seg_pad_val=0),  # depth 0 = invalid
    decode_head=dict(type='DPTDepthHead', max_depth=10.0, loss_decode=dict(type='SiLogLoss')))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
