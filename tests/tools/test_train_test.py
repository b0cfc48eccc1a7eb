"""tools/train.py, tools/test.py and torchrun, as a user runs them (subprocesses)."""
import socket
import subprocess
import sys
import textwrap

import torch.distributed as dist
from _runner_cli import releasing_process_group

from tests.mm.helpers import DEMO_SEG, REPO, SUBPROCESS_ENV, as_cli, tiny_run_options

TRAIN = str(REPO / 'tools' / 'train.py')
TEST = str(REPO / 'tools' / 'test.py')


def run(args, env=None, cwd=REPO, timeout=600) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env or SUBPROCESS_ENV, capture_output=True,
                          text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{" ".join(map(str, args))} failed:\n{output[-6000:]}'
    return output


def test_train_resume_and_test_a_checkpoint(demo_data, anyup_checkpoint, tmp_path):
    work = tmp_path / 'work'
    options = tiny_run_options(demo_data, work, anyup_checkpoint)
    out = run([sys.executable, TRAIN, str(DEMO_SEG), '--cfg-options', *as_cli(options)])
    assert 'Iter(train) [2/2]' in out and 'mIoU' in out
    assert (work / 'iter_2.pth').is_file()

    # --resume continues at iteration 3 (with mixed precision: bf16 autocast on CPU)
    options.update({'train_cfg.max_iters': 4, 'train_cfg.val_interval': 4})
    out = run([sys.executable, TRAIN, str(DEMO_SEG), '--resume', '--amp',
               '--cfg-options', *as_cli(options)])
    assert 'resumed epoch: 0, iter: 2' in out
    assert 'Iter(train) [3/4]' in out and 'Iter(train) [1/4]' not in out
    assert (work / 'iter_4.pth').is_file()

    predictions, overlays = tmp_path / 'pred', tmp_path / 'vis'
    out = run([sys.executable, TEST, str(DEMO_SEG), str(work / 'iter_4.pth'),
               '--work-dir', str(tmp_path / 'test'), '--out', str(predictions),
               '--show-dir', str(overlays), '--cfg-options', *as_cli(options)])
    assert 'Iter(test) [2/2]' in out and 'mIoU:' in out
    assert len(list(predictions.glob('*.png'))) == 4
    assert len(list(overlays.rglob('*.png'))) == 4


USER_CONFIG = '''
# A user's own config, outside the repository: anyup_neck comes in through custom_imports only.
custom_imports = dict(imports=['anyup_neck'], allow_failed_imports=False)
default_scope = 'mmseg'
data_root = '{data_root}'
pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='PackSegInputs')]
dataset = dict(type='ADE20KDataset', data_root=data_root, pipeline=pipeline,
               data_prefix=dict(img_path='images/training',
                                seg_map_path='annotations/training'))
train_dataloader = dict(batch_size=2, num_workers=0,
                        sampler=dict(type='InfiniteSampler', shuffle=True), dataset=dataset)
model = dict(
    type='AnyUpEncoderDecoder',
    freeze_backbone=True,
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, size=(32, 32)),
    # the swap: a CNN (ResNet-18 layer3, stride 16, 256 channels) instead of the demo's ViT
    backbone=dict(type='TimmBackbone', model_name='resnet18', out_indices=(3,)),
    neck=dict(type='AnyUpNeck', upsampler=dict(qk_dim=16, num_heads=4, lfu_basis=8),
              init_cfg=dict(type='Pretrained', checkpoint='{checkpoint}')),
    decode_head=dict(type='LinearHead', in_channels=256, num_classes=150))
optim_wrapper = dict(constructor='TrainableParamsOptimWrapperConstructor',
                     optimizer=dict(type='AdamW', lr=1e-3))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=2)
default_hooks = dict(logger=dict(type='LoggerHook', interval=1))
log_processor = dict(by_epoch=False)
'''


def test_user_config_outside_the_repo_swaps_the_backbone(demo_data, anyup_checkpoint,
                                                        tmp_path):
    config = tmp_path / 'my_resnet_anyup.py'
    config.write_text(textwrap.dedent(USER_CONFIG).format(
        data_root=demo_data / 'ade', checkpoint=anyup_checkpoint))
    out = run([sys.executable, TRAIN, str(config), '--work-dir', str(tmp_path / 'work')],
              cwd=tmp_path)
    assert f'AnyUpNeck: loaded upsampler weights from {anyup_checkpoint}' in out
    assert 'Iter(train) [2/2]' in out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_gloo(demo_data, anyup_checkpoint, tmp_path):
    """tools/dist_train.sh: torchrun, mmengine's launcher and DDP, gloo on CPU."""
    options = tiny_run_options(demo_data, tmp_path / 'work', anyup_checkpoint)
    options['train_cfg.val_interval'] = 100  # training only
    env = dict(SUBPROCESS_ENV, OMP_NUM_THREADS='1', PYTHON=sys.executable, PORT=str(free_port()))
    out = run(['bash', str(REPO / 'tools' / 'dist_train.sh'), str(DEMO_SEG), '2',
               '--cfg-options', *as_cli(options)], env=env)
    assert 'Distributed launcher: pytorch' in out and 'Distributed training: True' in out
    assert "model_wrapper_cfg = dict(type='mmseg.CPUDistributedDataParallel')" in out  # DDP
    assert out.count('Iter(train) [2/2]') == 1  # logged by rank 0 only
    assert (tmp_path / 'work' / 'iter_2.pth').is_file()


def test_releasing_process_group_destroys_only_the_group_its_block_created():
    """Without it a torchrun rank could abort at exit after a finished run (gloo's threads)."""
    def init_single_process_group():
        dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{free_port()}',
                                rank=0, world_size=1)

    with releasing_process_group():
        init_single_process_group()
        assert dist.is_initialized()
    assert not dist.is_initialized()

    init_single_process_group()  # the caller's group
    try:
        with releasing_process_group():
            pass
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()
