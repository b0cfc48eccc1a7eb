"""The upsampler-training configs: paper settings, and every backbone builds and fits."""
import pytest
from mmengine.config import Config
from mmseg.registry import MODELS

from tests.mm.helpers import CONFIGS

UPSAMPLER_CONFIGS = CONFIGS / 'upsampler'


def test_paper_config_has_the_paper_settings():
    cfg = Config.fromfile(UPSAMPLER_CONFIGS / 'anyup_dinov2_imagenet.py')
    model = cfg.model
    assert model.type == 'AnyUpCropConsistency' and list(model.backbones) == ['dinov2_s']
    assert model.backbones.dinov2_s.model_name == 'vit_small_patch14_dinov2.lvd142m'
    assert (model.image_size, model.input_size, model.crop_size, model.num_crops) == (
        448, 224, 224, 4)
    assert model.self_consistency_weight == 0.1 and model.input_consistency_weight == 0.1
    assert model.upsampler == dict(qk_dim=128, num_heads=4, window_ratio=0.1, lfu_basis=128,
                                   lfu_kernel_size=5, lfu_mode='paper')
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=2e-4)
    assert cfg.train_dataloader.batch_size == 4
    assert cfg.train_cfg.max_iters == 100000
    assert cfg.default_hooks.checkpoint.interval and cfg.default_hooks.logger.interval
    assert cfg.train_dataloader.dataset.pipeline[1] == dict(type='ResizeCoverCrop', size=448,
                                                            random_crop=True)


def test_multi_backbone_config_builds_every_backbone_at_the_paper_geometry():
    cfg = Config.fromfile(UPSAMPLER_CONFIGS / 'anyup_multi_backbone.py')
    backbones = cfg.model.backbones
    assert set(backbones) == {'dinov2_s', 'dinov2_reg_s', 'clip_b', 'siglip_b', 'vit_b'}
    for backbone in backbones.values():   # random, 1-block versions: names, patches, norms
        backbone.pretrained = None
        backbone.model_kwargs = dict(depth=1)
    trainer = MODELS.build(dict(cfg.model, upsampler=dict(qk_dim=16, lfu_basis=8)))
    grids = {name: g.output_grid for name, g in trainer.geometries.items()}
    assert grids == {'dinov2_s': (32, 32), 'dinov2_reg_s': (32, 32), 'clip_b': (28, 28),
                     'siglip_b': (28, 28), 'vit_b': (28, 28)}
    widths = {name: b.out_channels[0] for name, b in trainer.backbones.items()}
    assert widths == {'dinov2_s': 384, 'dinov2_reg_s': 384, 'clip_b': 768, 'siglip_b': 768,
                      'vit_b': 768}
    means = {name: b.mean for name, b in trainer.backbones.items()}
    assert means['dinov2_s'] != means['clip_b'] != means['siglip_b']   # own normalisations


@pytest.mark.parametrize('name', ['anyup_dinov2_imagenet.py', 'anyup_multi_backbone.py'])
def test_real_configs_need_local_weights(name):
    cfg = Config.fromfile(UPSAMPLER_CONFIGS / name)
    with pytest.raises(FileNotFoundError, match='pretrained: expected a local weights file'):
        MODELS.build(cfg.model)
