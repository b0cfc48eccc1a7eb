"""tools/train_upsampler.py end to end: learning signal, exported weights, resume,
multi-backbone, torchrun, and bad input (mmengine Runner, random timm ViTs, generated images).

Runs in-process through the tool's ``main`` (its command line) except torchrun. Small shapes:
64 px images, 32 px input and crops, patch 8 (4 x 4 features, 8 x 8 output), a tiny AnyUp.
"""
import glob
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

import train_upsampler as tool  # tools/, on sys.path through conftest.py
from _runner_cli import build_runner
from anyup_neck import AnyUp
from anyup_neck.mm.datasets import write_synthetic_images
from tests.mm.helpers import REPO, SUBPROCESS_ENV, as_cli

DEMO = REPO / 'configs' / 'upsampler' / 'demo_synthetic.py'
PROBE = REPO / 'tests' / 'tools' / 'upsampler_ddp_probe.py'
SOURCE_SIZE = 80   # generated scenes, resized/cropped to 64 by the pipeline


@pytest.fixture(scope='module')
def images(tmp_path_factory) -> Path:
    """64 training and 8 held-out generated scenes (train/, val/)."""
    root = tmp_path_factory.mktemp('upsampler_images')
    write_synthetic_images(str(root / 'train'), 64, SOURCE_SIZE, seed=0)
    write_synthetic_images(str(root / 'val'), 8, SOURCE_SIZE, seed=1)
    return root


def tiny_options(images: Path, work_dir: Path, iters: int, **extra) -> dict:
    """Overrides of the demo config: small shapes, ``iters`` iterations, checkpoint at end."""
    options = {
        'work_dir': str(work_dir), 'experiment_name': work_dir.name,
        'train_cfg.max_iters': iters, 'train_cfg.val_interval': iters,
        'default_hooks.logger.interval': 5, 'default_hooks.checkpoint.interval': iters,
        'model.image_size': 64, 'model.input_size': 32, 'model.crop_size': 32,
        'model.upsampler.qk_dim': 16, 'model.upsampler.lfu_basis': 16,
        'model.backbones.vit.model_kwargs.embed_dim': 48,
        'model.backbones.vit.model_kwargs.depth': 2,
        'model.backbones.vit.model_kwargs.img_size': 32,
    }
    for split, loader in (('train', 'train_dataloader'), ('val', 'val_dataloader')):
        options.update({f'{loader}.dataset.data_root': str(images / split),
                        f'{loader}.dataset.num_images': 64 if split == 'train' else 8,
                        f'{loader}.dataset.image_size': SOURCE_SIZE,
                        f'{loader}.dataset.min_size': 32,
                        f'{loader}.dataset.pipeline.1.size': 64})
    return {**options, **extra}


def train(options: dict, *flags: str):
    return tool.main([str(DEMO), *flags, '--cfg-options', *as_cli(options)])


def val_metrics(work_dir: Path) -> dict[int, dict]:
    """Validation entries of the run's scalars.json, by iteration."""
    [scalars] = glob.glob(str(work_dir / '*' / 'vis_data' / 'scalars.json'))
    entries = [json.loads(line) for line in open(scalars)]
    return {e['step']: e for e in entries if any(k.startswith('crop/') for k in e)}


def test_training_lowers_the_held_out_crop_loss_and_exports_loadable_weights(images,
                                                                           tmp_path):
    work = tmp_path / 'learn'
    runner = train(tiny_options(images, work, 60, **{'optim_wrapper.optimizer.lr': 5e-3}))
    metrics = val_metrics(work)
    before, after = metrics[0]['crop/vit/anyup'], metrics[60]['crop/vit/anyup']
    print(f'held-out crop cos-MSE: untrained {before:.4f} -> 60 steps {after:.4f} '
          f'(bilinear {metrics[0]["crop/vit/bilinear"]:.4f})')
    assert metrics[0]['crop/vit/bilinear'] == metrics[60]['crop/vit/bilinear']
    assert after < 0.96 * before

    trained = runner.model.upsampler.state_dict()
    for path, prefix in ((work / 'anyup_iter_60.pth', ''), (work / 'anyup_latest.pth', ''),
                         (work / 'iter_60.pth', 'upsampler.')):
        loaded = AnyUp.from_pretrained(path, prefix=prefix, lfu_mode='paper')
        assert loaded.key_features_encoder[0].mode == 'paper'
        for key, value in loaded.state_dict().items():
            assert torch.equal(value, trained[key]), (path, key)
    checkpoint = torch.load(work / 'iter_60.pth', weights_only=True)
    assert not any(k.startswith('backbones.') for k in checkpoint['state_dict'])


def test_resume_gives_the_weights_of_an_uninterrupted_run(images, tmp_path):
    n = 3
    straight = tmp_path / 'straight'
    train(tiny_options(images, straight, 2 * n, **{'default_hooks.checkpoint.interval': n}))
    resumed = tmp_path / 'resumed'
    train(tiny_options(images, resumed, 2 * n), '--resume', str(straight / f'iter_{n}.pth'))
    halfway = torch.load(straight / f'anyup_iter_{n}.pth', weights_only=True)
    expected = torch.load(straight / f'anyup_iter_{2 * n}.pth', weights_only=True)
    actual = torch.load(resumed / f'anyup_iter_{2 * n}.pth', weights_only=True)
    assert not (resumed / f'iter_{n}.pth').exists()          # it really started at n
    assert any(not torch.equal(halfway[k], expected[k]) for k in expected)
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


def test_two_backbones_of_different_width_and_patch_size_in_one_run(images, tmp_path):
    train_root = tmp_path / 'train'
    write_synthetic_images(str(train_root), 12, SOURCE_SIZE, seed=0)
    corrupt = train_root / 'zz_corrupt.jpg'
    data = (train_root / 'scene_seed0_80px_00000.jpg').read_bytes()
    corrupt.write_bytes(data[:len(data) // 2])                 # valid header, truncated
    # A second ViT: patch 16 (2 x 2 input features, 4 x 4 output), 64 channels instead of 48.
    wide = {'model_name': 'vit_tiny_patch16_224', 'model_kwargs.patch_size': 16,
            'model_kwargs.embed_dim': 64, 'model_kwargs.depth': 1,
            'model_kwargs.num_heads': 2, 'model_kwargs.img_size': 32}
    work = tmp_path / 'multi'
    options = tiny_options(images, work, 6, **{
        'train_dataloader.dataset.data_root': str(train_root),
        'train_dataloader.dataset.num_images': 12,
        **{f'model.backbones.wide.{key}': value for key, value in wide.items()}})
    runner = build_runner(tool.build_config([str(DEMO), '--cfg-options', *as_cli(options)]))
    calls = {'vit': 0, 'wide': 0}
    for name in calls:
        runner.model.backbones[name].register_forward_hook(
            lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    runner.train()
    assert calls['vit'] > 4 and calls['wide'] > 4     # 2 calls per step + validation
    final = val_metrics(work)[6]
    assert {'crop/vit/anyup', 'crop/wide/anyup', 'crop/vit/bilinear',
            'crop/wide/bilinear'} <= set(final)
    [log] = glob.glob(str(work / '*' / '*.log'))
    assert 'skipping an unreadable image' in open(log).read()
    assert 'zz_corrupt.jpg' in open(log).read()


def test_torchrun_two_ranks_with_amp_end_with_the_same_weights(images, tmp_path):
    work = tmp_path / 'ddp'
    options = tiny_options(images, work, 4, **{'env_cfg.dist_cfg.backend': 'gloo',
                                               'default_hooks.logger.interval': 2})
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
         str(PROBE), str(DEMO), '--launcher', 'pytorch', '--amp',
         '--cfg-options', *as_cli(options)],
        cwd=REPO, env=dict(SUBPROCESS_ENV, OMP_NUM_THREADS='1'), capture_output=True,
        text=True, timeout=400)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert 'Distributed training: True' in output and 'Iter(train) [4/4]' in output
    assert "type='CPUAmpOptimWrapper'" in output                # bf16 autocast on CPU
    rank0, rank1 = (torch.load(work / f'rank{r}_after.pth', weights_only=True) for r in (0, 1))
    start = torch.load(work / 'rank0_before.pth', weights_only=True)
    assert any(not torch.equal(start[k], rank0[k]) for k in start)     # it trained
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key


def _bad_data_config(tmp_path: Path, data_root: Path, min_size: int = 0) -> Path:
    """The demo config reading a plain image folder (no generated data)."""
    config = tmp_path / 'bad_data.py'
    config.write_text(textwrap.dedent(f'''
        _base_ = ['{DEMO}']
        train_dataloader = dict(dataset=dict(
            _delete_=True, type='ImageFolderDataset', data_root='{data_root}',
            min_size={min_size}, pipeline={{{{_base_.train_pipeline}}}}))
    '''))
    return config


@pytest.mark.parametrize('case, error, message', [
    ('empty', ValueError, r'data_root: expected JPEG/PNG files .* found none'),
    ('unreadable', ValueError, r'data_root: expected readable images'),
    ('too small', ValueError, r'min_size: expected images whose shorter side is at least 32'),
    ('unknown backbone', ValueError, r"backbones\['vit'\]: .*model_name: expected a timm "
                                     r"model name.*'vit_tiny_patch16_2244'"),
])
def test_bad_input_fails_before_training_starts(images, tmp_path, case, error, message):
    root = tmp_path / 'images'
    (root / 'sub').mkdir(parents=True)
    config, extra = DEMO, {}
    if case == 'unreadable':
        for i in range(3):
            (root / 'sub' / f'{i}.jpg').write_bytes(b'\xff\xd8 not really a jpeg')
    if case == 'too small':
        write_synthetic_images(str(root), 2, SOURCE_SIZE)
        Image.new('RGB', (40, 20)).save(root / 'sub' / 'thumbnail.png')
    if case == 'unknown backbone':
        extra['model.backbones.vit.model_name'] = 'vit_tiny_patch16_2244'
    else:
        config = _bad_data_config(tmp_path, root, min_size=32)
    work = tmp_path / 'work'
    options = tiny_options(images, work, 2, **extra)
    for key in ('data_root', 'num_images', 'image_size'):   # SyntheticImageFolder's
        del options[f'train_dataloader.dataset.{key}']
    with pytest.raises(error, match=message):
        tool.main([str(config), '--cfg-options', *as_cli(options)])
    assert not list(work.glob('iter_*.pth'))
