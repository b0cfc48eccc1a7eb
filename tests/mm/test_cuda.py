"""The mm stack on CUDA: AnyUpNeck and both segmentors forward and backward against the same
model on the CPU, and short runs of tools/train.py (with and without --amp) and
tools/train_upsampler.py --amp. Skipped without a GPU.

Float32 with TF32 off on both sides; errors relative to the scale of the CPU result (max
|cuda - cpu| / max |cpu|). Whole segmentors (a ViT, the neck, a head) sum in other orders in
cuDNN and in the attention kernels than on the CPU, hence their looser tolerance.
"""
from __future__ import annotations

import copy
import re
import subprocess
import sys

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.optim import AmpOptimWrapper
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from tests.numerics import relative_error

from .helpers import (DEMO_SEG, DEPTH, IMAGE, REPO, SEGMENTOR, SUBPROCESS_ENV, TINY_ANYUP, as_cli,
                      tiny_run_options)

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device'),
              pytest.mark.usefixtures('no_tf32')]


def test_anyup_neck_forward_and_backward_match_the_cpu():
    torch.manual_seed(0)
    neck = MODELS.build(dict(type='AnyUpNeck', upsampler=TINY_ANYUP, frozen=False,
                             in_index=(0, 1), out_strides=(1, 4), image_mean=[120.0] * 3,
                             image_std=[60.0] * 3)).double()
    on_gpu = copy.deepcopy(neck).float().cuda()
    g = torch.Generator().manual_seed(1)
    image = torch.randn(2, 3, *IMAGE, generator=g, dtype=torch.float64)
    levels = [torch.randn(2, 48, 4, 5, generator=g, dtype=torch.float64),
              torch.randn(2, 7, 2, 3, generator=g, dtype=torch.float64)]
    weights = [torch.randn(2, 48, 32, 40, generator=g, dtype=torch.float64),
               torch.randn(2, 7, 8, 10, generator=g, dtype=torch.float64)]

    leaves = [level.clone().requires_grad_() for level in levels]
    expected = neck(leaves, image)
    sum((out * w).sum() for out, w in zip(expected, weights)).backward()
    gpu_leaves = [level.float().cuda().requires_grad_() for level in levels]
    got = on_gpu(gpu_leaves, image.float().cuda())
    sum((out * w.float().cuda()).sum() for out, w in zip(got, weights)).backward()

    for out, ref in zip(got, expected):
        assert out.device.type == 'cuda' and relative_error(out, ref) < 1e-5
    for leaf, ref in zip(gpu_leaves, leaves):
        assert relative_error(leaf.grad, ref.grad) < 1e-4
    parameters = dict(on_gpu.named_parameters())
    trained = [(name, p) for name, p in neck.named_parameters() if p.grad is not None]
    assert trained                                           # the upsampler learns (frozen=False)
    for name, p in trained:
        assert relative_error(parameters[name].grad, p.grad) < 1e-4, name


def batch(depth: bool, device: str) -> tuple[torch.Tensor, list[SegDataSample]]:
    """Two preprocessed images (2, 3, *IMAGE) and their ground truth, on ``device``."""
    g = torch.Generator().manual_seed(2)
    inputs = torch.randn(2, 3, *IMAGE, generator=g)
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=IMAGE, ori_shape=IMAGE, pad_shape=IMAGE))
        if depth:
            sample.gt_depth_map = PixelData(data=0.5 + 4 * torch.rand(1, *IMAGE, generator=g))
        else:
            sample.gt_sem_seg = PixelData(data=torch.randint(0, 3, (1, *IMAGE), generator=g))
        samples.append(sample.to(device))
    return inputs.to(device), samples


@pytest.mark.parametrize('config', [SEGMENTOR, DEPTH], ids=['encoder-decoder', 'depth'])
def test_segmentor_loss_and_gradients_match_the_cpu(config):
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(copy.deepcopy(config))).train()
    on_gpu = copy.deepcopy(model).cuda()
    depth = config is DEPTH
    losses = {}
    for name, net, device in (('cpu', model, 'cpu'), ('cuda', on_gpu, 'cuda')):
        inputs, samples = batch(depth, device)
        loss, _ = net.parse_losses(net(inputs, samples, mode='loss'))
        loss.backward()
        losses[name] = loss
    assert losses['cuda'].device.type == 'cuda' and torch.isfinite(losses['cuda'])
    assert relative_error(losses['cuda'], losses['cpu']) < 1e-4
    parameters = dict(on_gpu.named_parameters())
    trained = [(name, p) for name, p in model.named_parameters() if p.grad is not None]
    assert any(name.startswith('backbone.') for name, _ in trained)  # through the neck
    for name, p in trained:
        assert relative_error(parameters[name].grad, p.grad) < 1e-3, name
    with torch.no_grad():                                     # inference, as in validation
        inputs, samples = batch(depth, 'cuda')
        predicted = on_gpu.eval()(inputs, samples, mode='predict')
    prediction = predicted[0].get('pred_depth_map' if depth else 'pred_sem_seg').data
    assert len(predicted) == 2 and prediction.device.type == 'cuda'
    assert prediction.shape[-2:] == IMAGE


def run_tool(args: list[str]) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=SUBPROCESS_ENV,
                          capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    return output


@pytest.mark.parametrize('amp', [False, True], ids=['fp32', 'amp'])
def test_train_tool_on_the_demo_config(amp, demo_data, anyup_checkpoint, tmp_path):
    options = tiny_run_options(demo_data, tmp_path / 'work', anyup_checkpoint)
    out = run_tool([str(REPO / 'tools' / 'train.py'), str(DEMO_SEG), *(['--amp'] if amp else []),
                    '--cfg-options', *as_cli(options)])
    assert 'Iter(train) [2/2]' in out and 'mIoU' in out
    assert ("type='AmpOptimWrapper'" in out) == amp and 'CPUAmpOptimWrapper' not in out
    memory = [int(m) for m in re.findall(r'memory: (\d+)', out)]   # MB of the GPU, per log
    assert memory and max(memory) > 0
    losses = [float(m) for m in re.findall(r' loss: ([-\d.e+naif]+)', out)]
    assert losses and all(v == v and abs(v) != float('inf') for v in losses)
    assert (tmp_path / 'work' / 'iter_2.pth').is_file()


def test_train_upsampler_tool_with_amp(tmp_path):
    sys.path.insert(0, str(REPO / 'tools'))
    import train_upsampler  # noqa: E402  (tools/, as python tools/train_upsampler.py runs)
    from _runner_cli import build_runner  # noqa: E402

    from anyup_neck import AnyUp
    iters, work = 12, tmp_path / 'work'
    options = {'work_dir': str(work), 'train_cfg.max_iters': iters,
               'train_cfg.val_interval': iters, 'default_hooks.checkpoint.interval': iters,
               'default_hooks.logger.interval': 4}
    for split, loader in (('train', 'train_dataloader'), ('val', 'val_dataloader')):
        options.update({f'{loader}.dataset.data_root': str(tmp_path / split),
                        f'{loader}.dataset.num_images': 16 if split == 'train' else 4})
    runner = build_runner(train_upsampler.build_config([
        str(REPO / 'configs' / 'upsampler' / 'demo_synthetic.py'), '--amp',
        '--cfg-options', *as_cli(options)]))
    model = runner.model
    assert next(model.parameters()).device.type == 'cuda'
    before = {k: v.clone() for k, v in model.upsampler.state_dict().items()}
    runner.train()
    assert isinstance(runner.optim_wrapper, AmpOptimWrapper)          # fp16, loss scaling
    assert runner.iter == iters
    after = model.upsampler.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before)   # it trained
    metric = runner.message_hub.get_scalar('val/crop/vit/anyup').current()
    assert metric == metric
    exported = AnyUp.from_pretrained(work / 'anyup_latest.pth', lfu_mode='paper')
    for key, value in exported.state_dict().items():
        assert torch.equal(value, after[key].cpu()), key
