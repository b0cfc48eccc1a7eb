"""tools/eval_upsampling.py end to end on a tiny generated dataset."""
from __future__ import annotations

import json

import pytest
import torch

from anyup_neck import AnyUp
from anyup_neck.mm.datasets import write_demo_datasets
import eval_upsampling  # tools/, on sys.path through conftest.py

TINY_VIT = json.dumps(dict(patch_size=8, embed_dim=32, depth=2, num_heads=2, img_size=32,
                           init_values=1.0))


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('shapes')
    write_demo_datasets(str(root), num_train=6, num_val=3, size=32, log=lambda _: None)
    return root / 'ade'


def test_compares_every_method_and_writes_reports(data_root, tmp_path):
    checkpoint = tmp_path / 'small.pth'
    torch.manual_seed(1)
    torch.save(AnyUp(qk_dim=16, lfu_basis=8, num_heads=2, lfu_mode='paper').state_dict(),
               checkpoint)
    results = eval_upsampling.main([
        '--data-root', str(data_root), '--image-size', '32', '--backbone', 'vit_tiny_patch16_224',
        '--backbone-kwargs', TINY_VIT, '--probe-steps', '20', '--pixels-per-image', '64',
        '--checkpoint', f'small={checkpoint}', '--lfu-mode', 'paper', '--num-classes', '5',
        '--json', str(tmp_path / 'r.json'), '--markdown', str(tmp_path / 'r.md')])
    assert list(results) == ['nearest', 'bilinear', 'bicubic', 'guided_filter', 'anyup_random',
                             'small']
    for row in results.values():
        assert -1 <= row['cosine'] <= 1 and row['mse'] >= 0
        assert 0 <= row['probe_mIoU'] <= 100 and 0 <= row['lowres_probe_mIoU'] <= 100
    assert json.loads((tmp_path / 'r.json').read_text()) == results
    table = (tmp_path / 'r.md').read_text()
    assert table.startswith('| method |') and '| small |' in table


def test_bad_arguments_are_named(data_root, tmp_path):
    with pytest.raises(ValueError, match='--image-size: expected a multiple of the backbone '
                                         'patch size 8, got 36'):
        eval_upsampling.main(['--data-root', str(data_root), '--image-size', '36', '--backbone',
                              'vit_tiny_patch16_224', '--backbone-kwargs', TINY_VIT])
    with pytest.raises(FileNotFoundError, match='data_root: expected images under'):
        eval_upsampling.main(['--data-root', str(tmp_path), '--image-size', '32', '--backbone',
                              'vit_tiny_patch16_224', '--backbone-kwargs', TINY_VIT])
    with pytest.raises(ValueError, match="--checkpoint: expected NAME=PATH, got 'nopath'"):
        eval_upsampling.main(['--data-root', str(data_root), '--image-size', '32', '--backbone',
                              'vit_tiny_patch16_224', '--backbone-kwargs', TINY_VIT,
                              '--checkpoint', 'nopath'])
