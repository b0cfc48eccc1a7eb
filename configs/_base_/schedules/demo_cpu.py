# A few minutes on a CPU: 300 iterations, validation and a checkpoint at the end.
_base_ = ['./probe_40k.py']
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=30, end=300, by_epoch=False),
]
train_cfg = dict(max_iters=300, val_interval=300)
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(interval=300, max_keep_ckpts=1))
