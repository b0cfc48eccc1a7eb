# Runtime shared by every config: mmseg scope, anyup_neck registered, logging, visualisation.
default_scope = 'mmseg'
custom_imports = dict(imports=['anyup_neck'], allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # 'nccl' for GPUs; CPU-only multi-process runs use
    # --cfg-options env_cfg.dist_cfg.backend=gloo
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
