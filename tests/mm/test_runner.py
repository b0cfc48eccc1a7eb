"""Two training iterations + validation through mmengine's real Runner, on generated data."""
import sys
import uuid

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmseg.apis import inference_model, init_model

from .helpers import (DEMO_DEPTH, DEMO_SEG, DEMO_SEG_BILINEAR, DEMO_SEG_DPT, REPO,
                      tiny_run_options)

sys.path.insert(0, str(REPO / 'tools'))
from _runner_cli import skip_pretrained_weights  # noqa: E402  (tools/test.py's, for inference)


def make_runner(config, demo_data, work_dir, checkpoint, depth=False, **extra) -> Runner:
    cfg = Config.fromfile(config)
    cfg.merge_from_dict({**tiny_run_options(demo_data, work_dir, checkpoint, depth), **extra})
    cfg.experiment_name = f'{config.stem}_{uuid.uuid4().hex[:8]}'
    return Runner.from_cfg(cfg)


@pytest.mark.parametrize('config, depth, metric', [
    (DEMO_SEG_DPT, False, 'mIoU'),
    (DEMO_DEPTH, True, 'rmse'),
    (DEMO_SEG_BILINEAR, False, 'mIoU'),
], ids=['anyup+dpt seg', 'anyup+dpt depth', 'bilinear+linear seg'])
def test_two_iterations_train_and_validate(config, depth, metric, demo_data, anyup_checkpoint,
                                           tmp_path):
    checkpoint = None if config == DEMO_SEG_BILINEAR else anyup_checkpoint
    runner = make_runner(config, demo_data, tmp_path, checkpoint, depth)
    runner.train()
    assert runner.iter == 2
    assert (tmp_path / 'iter_2.pth').is_file()
    value = runner.message_hub.get_scalar(f'val/{metric}').current()
    assert value == value  # a number, not NaN
    if depth:
        assert 0 < value < 10 and 'val/d1' in runner.message_hub.log_scalars


def test_frozen_upsampler_and_backbone_are_unchanged_by_training(demo_data, anyup_checkpoint,
                                                                 tmp_path):
    runner = make_runner(DEMO_SEG, demo_data, tmp_path, anyup_checkpoint,
                         **{'model.freeze_backbone': True})
    model = runner.model
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.decode_head.state_dict().items()}
    runner.train()
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, backbone_before[key], rtol=0, atol=0)
    official = torch.load(anyup_checkpoint)
    for key, value in model.neck.upsampler.state_dict().items():
        torch.testing.assert_close(value, official[key], rtol=0, atol=0)
    head_after = model.decode_head.state_dict()
    assert any(not torch.equal(v, head_before[k]) for k, v in head_after.items())

    # mmseg's inference API loads the Runner's checkpoint (torch's weights_only default)
    # without the original weight files
    cfg = runner.cfg.copy()
    skip_pretrained_weights(cfg)
    segmentor = init_model(cfg, str(tmp_path / 'iter_2.pth'), device='cpu')
    torch.testing.assert_close(segmentor.decode_head.conv_seg.weight,
                               model.decode_head.conv_seg.weight)
    image = next((demo_data / 'ade' / 'images' / 'validation').iterdir())
    result = inference_model(segmentor, str(image))
    assert result.pred_sem_seg.data.shape[-2:] == (32, 32)
