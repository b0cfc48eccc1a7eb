# NYUv2 depth: frozen DINOv2 ViT-S/14 blocks 3/6/9/12 -> frozen AnyUp pyramid (strides
# 4/8/16/32) -> DPT depth head. RMSE / delta1 (mmseg's DepthMetric) on the NYU test split.
_base_ = [
    './_base_/models/anyup_dpt.py', './_base_/datasets/nyu_448.py',
    './_base_/default_runtime.py', './_base_/schedules/probe_40k.py'
]
model = dict(
    type='AnyUpDepthEstimator',
    data_preprocessor=dict(seg_pad_val=0),  # depth 0 = invalid
    decode_head=dict(type='DPTDepthHead', max_depth=10.0, loss_decode=dict(type='SiLogLoss')))
optim_wrapper = dict(optimizer=dict(lr=1e-4))
default_hooks = dict(checkpoint=dict(save_best='rmse', rule='less'))
