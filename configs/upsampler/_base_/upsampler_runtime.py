# Runtime shared by the upsampler-training configs (tools/train_upsampler.py).
default_scope = 'mmseg'
custom_imports = dict(imports=['anyup_neck'], allow_failed_imports=False)

env_cfg = dict(cudnn_benchmark=False,
               mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))   # CPU-only torchrun: backend='gloo'
randomness = dict(seed=0)

# Frozen backbones (and AnyUp's unused attention output projection) stay out of the optimizer.
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-4),
                     constructor='TrainableParamsOptimWrapperConstructor')
train_cfg = dict(type='IterBasedTrainLoop', max_iters=100000, val_interval=5000)
val_cfg = dict(type='ValLoop')
val_evaluator = dict(type='CropConsistencyMetric')

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5000, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'))
custom_hooks = [dict(type='ExportUpsamplerHook'), dict(type='ValidateBeforeTrainHook')]
log_processor = dict(by_epoch=False)
log_level = 'INFO'
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends)
load_from = None
resume = False
