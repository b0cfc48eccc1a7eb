"""AnyUp on a GPU never makes the host wait for it: no value crosses between host and device
inside the forward or the training step (see tests/host_waits.py). The forward runs on fake
CUDA tensors, through the GPU's Python code paths (the extension's ops run their shape
functions); autograd needs a real CUDA device, so the training step runs on the meta device
with the GPU formulations selected as on CUDA."""
from __future__ import annotations

import contextlib
import importlib
import inspect

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from anyup_neck import AnyUp
from anyup_neck.ops import extension, fused
from tests.host_waits import HostWaits, select_gpu_paths_on_meta

pytestmark = pytest.mark.skipif(not extension.available(), reason='needs the compiled extension')
BACKENDS = importlib.import_module('anyup_neck.ops.window_attention').BACKENDS


@pytest.fixture
def as_on_cuda(monkeypatch):
    """The extension's CUDA kernels selectable (fake tensors run their shape functions)."""
    monkeypatch.setattr(extension, 'has_cuda_kernels', lambda: True)
    monkeypatch.setitem(BACKENDS, 'cuda_tiled', extension.window_attention_cuda_tiled)


@pytest.mark.parametrize('device', ['cuda', 'meta'])
def test_host_waits_are_found(device):
    fake = FakeTensorMode() if device == 'cuda' else contextlib.nullcontext()
    with fake, torch.device(device):
        x = torch.ones(3)
        with HostWaits() as waits:
            here = inspect.currentframe().f_lineno
            x * torch.tensor(2.0, device='cpu')         # a host scalar: taken by value
            x + torch.tensor([1.0, 2.0, 3.0])           # made on the host, copied
            x + torch.ones(3, device='cpu').to(device)  # copied
            x + torch.asarray([1.0, 2.0, 3.0])          # made on the host, copied
            x.index_put_((torch.arange(2),), torch.tensor(5.0, device='cpu'))  # copied
    lines = {f'{__file__}:{here + n}' for n in (2, 3, 4, 5)}
    assert {caller for _, caller in waits.found} == lines


@pytest.mark.parametrize('kernels', [False, True], ids=['pytorch-ops', 'cuda-kernels'])
@pytest.mark.parametrize('backend', ['torch', 'cuda_tiled'])
def test_gpu_forward_never_waits(as_on_cuda, monkeypatch, backend, kernels):
    monkeypatch.setattr(fused, 'use_cuda_kernels', kernels)
    with FakeTensorMode(), torch.device('cuda'), torch.no_grad():
        model = AnyUp(qk_dim=16, num_heads=4, lfu_basis=8, backend=backend).eval()
        image, features = torch.randn(2, 3, 48, 40), torch.randn(2, 24, 6, 5)
        with HostWaits() as waits:
            out = model(image, features, output_size=(48, 40))
    assert out.shape == (2, 24, 48, 40) and out.device.type == 'cuda'
    assert waits.found == []


@pytest.mark.parametrize('backend', ['torch', 'cuda_tiled'])
def test_gpu_training_step_never_waits(as_on_cuda, monkeypatch, backend):
    select_gpu_paths_on_meta(monkeypatch, cuda_kernels=True)
    with torch.device('meta'):
        model = AnyUp(qk_dim=16, num_heads=4, lfu_basis=8, backend=backend)
        image, features = torch.randn(2, 3, 48, 40), torch.randn(2, 24, 6, 5)
        with HostWaits() as waits:
            out = model(image, features, output_size=(48, 40))
            out.backward(torch.ones_like(out))
    no_grad = [name for name, p in model.named_parameters() if p.grad is None]
    assert all('.out_proj.' in name for name in no_grad)  # unused, as in the official model
    assert waits.found == []
