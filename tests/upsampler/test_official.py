"""The official formulation (anyup_neck.upsampler.official): its window rule against a numpy
double loop, every tensor on the inputs' device, CUDA = CPU, autocast."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from anyup_neck.upsampler.official import official_anyup, window_allowed
from tests.conftest import randomized_anyup


def numpy_window_allowed(H: int, W: int, h: int, w: int, ratio: float) -> np.ndarray:
    """The window rule evaluated with numpy in float32, one output pixel at a time."""
    def bounds(n_out, n_in):
        centre = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) / np.float32(n_out)
        lo = np.clip(centre - np.float32(ratio), np.float32(0), np.float32(1)) * np.float32(n_in)
        hi = np.clip(centre + np.float32(ratio), np.float32(0), np.float32(1)) * np.float32(n_in)
        return np.floor(lo).astype(np.int64), np.ceil(hi).astype(np.int64)

    (r0, r1), (c0, c1) = bounds(H, h), bounds(W, w)
    mask = np.zeros((H, W, h, w), dtype=bool)
    for i in range(H):
        for j in range(W):
            mask[i, j, r0[i]:r1[i], c0[j]:c1[j]] = True
    return mask.reshape(H * W, h * w)


@pytest.mark.parametrize('ratio', [0.1, 0.25, 0.3, 0.5])
def test_window_rule_equals_the_numpy_loop(ratio):
    for (H, W), (h, w) in [((1, 23), (6, 2)), ((13, 17), (6, 6)), ((5, 6), (8, 8)),
                           ((36, 30), (3, 3)), ((50, 21), (33, 47)), ((448, 1), (32, 1))]:
        got = window_allowed((H, W), (h, w), ratio)
        assert got.dtype == torch.bool and got.shape == (H * W, h * w)
        np.testing.assert_array_equal(got.numpy(), numpy_window_allowed(H, W, h, w, ratio))


def test_zero_ratio_is_a_global_window():
    assert window_allowed((3, 5), (2, 4), 0.0).all()


class DeviceLog(TorchDispatchMode):
    """Records the device of every tensor an op takes or returns."""

    def __init__(self):
        super().__init__()
        self.devices: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.devices.update(t.device.type for t in tree_leaves((args, kwargs, out))
                            if isinstance(t, torch.Tensor))
        return out


@pytest.mark.parametrize('mode', ['official', 'paper'])
def test_every_tensor_is_on_the_inputs_device(mode):
    """On meta tensors, no op may see or make a tensor elsewhere (a CPU tensor created without
    ``device=`` is what broke the CUDA benchmark)."""
    model = randomized_anyup(qk_dim=16, lfu_basis=8, num_heads=2)
    sd = {k: v.to('meta') for k, v in model.state_dict().items()}
    image = torch.empty(2, 3, 16, 12, dtype=torch.float64, device='meta')
    feats = torch.empty(2, 5, 2, 3, dtype=torch.float64, device='meta')
    with DeviceLog() as log:
        out = official_anyup(sd, image, feats, (9, 7), num_heads=2, mode=mode)
    assert out.shape == (2, 5, 9, 7) and out.dtype == torch.float64
    assert log.devices == {'meta'}


def test_channel_changing_resblocks_use_their_shortcut():
    """lfu_basis != qk_dim: the key-features encoder's first ResBlock has a 1x1 shortcut."""
    model = randomized_anyup(qk_dim=16, lfu_basis=8, num_heads=2)
    image = torch.randn(1, 3, 16, 12, dtype=torch.float64)
    feats = torch.randn(1, 5, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        got = model(image, feats)
    expected = official_anyup(model.state_dict(), image, feats, (16, 12), num_heads=2)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)


def test_runs_under_bf16_autocast_close_to_float32():
    model = randomized_anyup(dtype=torch.float32, qk_dim=16, lfu_basis=8, num_heads=2)
    sd = model.state_dict()
    image, feats = torch.randn(1, 3, 24, 20), torch.randn(1, 6, 3, 4)
    exact = official_anyup(sd, image, feats, (24, 20), num_heads=2)
    with torch.autocast('cpu', torch.bfloat16):
        reduced = official_anyup(sd, image, feats, (24, 20), num_heads=2)
    assert reduced.shape == exact.shape and torch.isfinite(reduced).all()
    assert ((reduced.float() - exact).norm() / exact.norm()).item() < 5e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_equals_cpu_in_float64():
    model = randomized_anyup(qk_dim=16, lfu_basis=8, num_heads=2)
    image = torch.randn(2, 3, 28, 21, dtype=torch.float64)
    feats = torch.randn(2, 7, 4, 3, dtype=torch.float64)
    expected = official_anyup(model.state_dict(), image, feats, (30, 17), num_heads=2)
    sd = {k: v.cuda() for k, v in model.state_dict().items()}
    got = official_anyup(sd, image.cuda(), feats.cuda(), (30, 17), num_heads=2)
    assert got.device.type == 'cuda'
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-9, atol=1e-10)
