"""Shared by tests/mm and tests/tools: tiny demo data, a tiny AnyUp checkpoint, run options.

Everything is generated (procedural scenes, random weights); nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anyup_neck import AnyUp, runtime
from anyup_neck.mm.datasets import write_demo_datasets

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs'
DEMO_SEG = CONFIGS / 'demo' / 'shapes_vit_anyup_linear.py'
DEMO_SEG_DPT = CONFIGS / 'demo' / 'shapes_vit_anyup_dpt.py'
DEMO_SEG_BILINEAR = CONFIGS / 'demo' / 'shapes_vit_bilinear_linear.py'
DEMO_DEPTH = CONFIGS / 'demo' / 'shapes_depth_vit_anyup_dpt.py'

#: A small AnyUp: random weights need not have the official width.
TINY_ANYUP = dict(qk_dim=16, num_heads=4, lfu_basis=8)

#: Small models of both segmentors (a 2-block random ViT, AnyUp neck, linear or DPT head) on
#: preprocessed (B, 3, *IMAGE) inputs.
IMAGE = (32, 40)
BACKBONE = dict(type='TimmBackbone', model_name='vit_tiny_patch16_224',
                model_kwargs=dict(patch_size=8, depth=2, embed_dim=48, num_heads=2, img_size=32))
PREPROCESSOR = dict(type='SegDataPreProcessor', mean=[127.5] * 3, std=[127.5] * 3,
                    bgr_to_rgb=True, size=IMAGE)
SEGMENTOR = dict(type='AnyUpEncoderDecoder', data_preprocessor=PREPROCESSOR, backbone=BACKBONE,
                 neck=dict(type='AnyUpNeck', upsampler=TINY_ANYUP),
                 decode_head=dict(type='LinearHead', in_channels=48, num_classes=3,
                                  dropout_ratio=0.0, norm_cfg=dict(type='BN')),
                 test_cfg=dict(mode='whole'))
DEPTH = dict(type='AnyUpDepthEstimator', data_preprocessor=PREPROCESSOR,
             backbone=dict(BACKBONE, out_indices=(0, 1)),
             neck=dict(type='AnyUpNeck', upsampler=TINY_ANYUP, in_index=(0, 1),
                       out_strides=(4, 8)),
             decode_head=dict(type='DPTDepthHead', in_channels=[48, 48], in_index=[0, 1],
                              reassemble_channels=(8, 16), channels=8, norm_cfg=None,
                              dropout_ratio=0.0),
             test_cfg=dict(mode='whole'))

#: Environment for subprocesses: the CPU process settings, the repo importable.
SUBPROCESS_ENV = runtime.environment(PYTHONPATH=str(REPO))


def write_anyup_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random tiny AnyUp saved as a plain state_dict (the official checkpoints' format)."""
    torch.manual_seed(seed)
    model = AnyUp(**TINY_ANYUP)
    with torch.no_grad():  # non-trivial norms so that loading mistakes show
        for name, p in model.named_parameters():
            if p.dim() == 1 and name != 'rope.freqs':
                p.add_(0.1 * torch.randn_like(p))
    torch.save(model.state_dict(), path)
    return path


def tiny_run_options(data_root: Path, work_dir: Path, checkpoint: Path | None,
                     depth: bool = False, max_iters: int = 2) -> dict:
    """Config overrides for a 2-iteration run of a demo config on the generated data."""
    root = str(data_root / ('nyu' if depth else 'ade'))
    options = {'work_dir': str(work_dir), 'train_cfg.max_iters': max_iters,
               'train_cfg.val_interval': max_iters, 'default_hooks.logger.interval': 1,
               'default_hooks.checkpoint.interval': 2}
    if checkpoint is not None:  # an AnyUp neck, with the tiny checkpoint's architecture
        options.update({'model.neck.upsampler.qk_dim': TINY_ANYUP['qk_dim'],
                        'model.neck.upsampler.lfu_basis': TINY_ANYUP['lfu_basis'],
                        'model.neck.init_cfg.checkpoint': str(checkpoint)})
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options.update({f'{loader}.dataset.data_root': root, f'{loader}.batch_size': 2,
                        f'{loader}.num_workers': 0, f'{loader}.persistent_workers': False})
    return options


def as_cli(options: dict) -> list[str]:
    """``--cfg-options`` arguments for :func:`tiny_run_options`."""
    return [f'{key}={value}' for key, value in options.items()]


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory) -> Path:
    """Procedural scenes, 32x32 (6 train, 4 val), in the ADE20K (ade/) and NYUv2 (nyu/)
    layouts."""
    root = tmp_path_factory.mktemp('demo_data')
    write_demo_datasets(str(root), num_train=6, num_val=4, size=32, seed=0, log=lambda _: None)
    return root


@pytest.fixture(scope='session')
def anyup_checkpoint(tmp_path_factory) -> Path:
    """A random tiny AnyUp checkpoint file (official format)."""
    return write_anyup_checkpoint(tmp_path_factory.mktemp('weights') / 'anyup_tiny.pth')
