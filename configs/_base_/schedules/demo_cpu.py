# A few minutes on a CPU: 150 iterations, validation and a checkpoint at the end.
_base_ = ['./probe_40k.py']
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=15),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=15, end=150, by_epoch=False),
]
train_cfg = dict(max_iters=150, val_interval=150)
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(interval=150, max_keep_ckpts=1))
