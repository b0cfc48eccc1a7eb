"""Every shipped config (configs/*.py, configs/demo/*.py) builds and runs on a tiny input.

Weights paths are pointed at generated files (random official-architecture AnyUp weights,
random backbones): nothing is downloaded.
"""
import pytest
import torch
from mmengine.config import Config
from mmseg.registry import DATASETS, MODELS

from anyup_neck import AnyUp

from .helpers import CONFIGS

SHIPPED = sorted(p for p in [*CONFIGS.glob('*.py'), *(CONFIGS / 'demo').glob('*.py')])


@pytest.fixture(scope='module')
def official_size_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp('weights') / 'anyup_official_arch.pth'
    torch.save(AnyUp().state_dict(), path)
    return path


@pytest.mark.parametrize('path', SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_builds_and_runs(path, official_size_checkpoint):
    cfg = Config.fromfile(path)
    cfg.model.backbone.pretrained = None
    if cfg.model.neck.get('init_cfg', {}).get('checkpoint') is not None:
        cfg.model.neck.init_cfg.checkpoint = str(official_size_checkpoint)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.eval()
    backbone = model.backbone
    preprocessor = model.data_preprocessor
    torch.testing.assert_close(preprocessor.mean.flatten(), torch.tensor(backbone.mean),
                               atol=0.01, rtol=0)
    torch.testing.assert_close(preprocessor.std.flatten(), torch.tensor(backbone.std),
                               atol=0.01, rtol=0)
    size = 2 * backbone.patch_size
    with torch.no_grad():
        results = model.predict(torch.randn(1, 3, size, size))
    key = 'pred_depth_map' if 'Depth' in cfg.model.type else 'pred_sem_seg'
    assert results[0].get(key).data.shape[-2:] == (size, size)


@pytest.mark.parametrize('path', [CONFIGS / 'ade20k_dinov2_anyup.py',
                                  CONFIGS / 'nyu_dinov2_anyup_dpt.py',
                                  CONFIGS / 'demo' / 'shapes_vit_anyup_linear.py',
                                  CONFIGS / 'demo' / 'shapes_depth_vit_anyup_dpt.py'],
                         ids=lambda p: p.stem)
def test_dataset_pipelines_read_the_generated_layouts(path, demo_data):
    cfg = Config.fromfile(path)
    layout = 'nyu' if 'nyu' in cfg.train_dataloader.dataset.data_root else 'ade'
    key = 'gt_depth_map' if layout == 'nyu' else 'gt_sem_seg'
    for loader in ('train_dataloader', 'val_dataloader'):
        dataset = DATASETS.build(dict(cfg[loader].dataset, data_root=str(demo_data / layout)))
        assert len(dataset) == (6 if loader == 'train_dataloader' else 4)
        sample = dataset[0]
        assert sample['inputs'].shape[0] == 3
        target = sample['data_samples'].get(key).data
        if loader == 'train_dataloader':  # (test pipelines keep labels at the original size)
            assert target.shape[-2:] == sample['inputs'].shape[-2:]
        else:
            assert target.shape[-2:] == (32, 32)
