"""The fused inference kernels against the PyTorch ops they replace, on every instruction set."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from anyup_neck.ops import fused
from anyup_neck.upsampler import LearnedFeatureUnification, RoPE
from tests.ops.helpers import cpu_isas, use_isa

TOLERANCE = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6)}


def _group_norm(C: int, groups: int, dtype: torch.dtype) -> torch.nn.GroupNorm:
    norm = torch.nn.GroupNorm(groups, C).to(dtype)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    return norm


@pytest.mark.parametrize('isa', cpu_isas())
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('shape, groups, channels_last', [
    ((2, 16, 7, 9), 4, True),        # batch 2, non-square
    ((1, 24, 1, 13), 8, False),      # 1xN, NCHW
    ((3, 8, 45, 50), 8, True),       # several statistics chunks per image
    ((1, 8, 50, 45), 2, False),
    ((1, 1, 3, 4), 1, False),        # one channel
])
def test_group_norm_silu_matches_torch(isa, dtype, shape, groups, channels_last, monkeypatch):
    use_isa(monkeypatch, isa)
    torch.manual_seed(0)
    x = 3 * torch.randn(shape, dtype=dtype) + 2  # a mean far from 0 tests the variance formula
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    norm = _group_norm(shape[1], groups, dtype)
    with torch.no_grad():
        expected = F.silu(norm(x))
        got = fused.group_norm_silu(x, norm)
        torch.testing.assert_close(got, expected, **TOLERANCE[dtype])
        assert got.stride() == x.stride()  # the layout of x
        same = x.clone(memory_format=torch.preserve_format)
        assert fused.group_norm_silu(same, norm, out=same) is same
        torch.testing.assert_close(same, expected, **TOLERANCE[dtype])


@pytest.mark.parametrize('isa', cpu_isas())
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('shape', [(2, 16, 5, 7), (1, 8, 1, 11), (1, 128, 9, 3)])
def test_rotary_2d_matches_the_rope_layer(isa, dtype, shape, monkeypatch):
    use_isa(monkeypatch, isa)
    torch.manual_seed(1)
    rope = RoPE(shape[1]).to(dtype)
    with torch.no_grad():
        rope.freqs.add_(0.1 * torch.randn_like(rope.freqs))  # checkpoints override the init
    x = torch.randn(shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = rope(x.contiguous())  # NCHW: the PyTorch path
        got = rope(x)                    # channels-last: the fused kernel, in place
    assert got.data_ptr() == x.data_ptr()
    torch.testing.assert_close(got, expected, **TOLERANCE[dtype])


@pytest.mark.parametrize('isa', cpu_isas())
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('mode', ['official', 'paper'])
@pytest.mark.parametrize('M, k, shape', [
    (8, 5, (2, 6, 5, 7)),     # batch 2, non-square
    (20, 3, (1, 1, 1, 9)),    # one channel, 1xN, M not a multiple of the lane block
    (16, 5, (1, 1536, 3, 2)),  # many channels
    (4, 7, (1, 3, 2, 2)),     # kernel larger than the map
    (103, 3, (1, 7, 4, 5)),   # register blocks of every size: 7 Lanes of M, 7 channels, 103 rows
])
def test_basis_softmax_mean_matches_the_lfu_layer(isa, dtype, mode, M, k, shape, monkeypatch):
    use_isa(monkeypatch, isa)
    torch.manual_seed(2)
    lfu = LearnedFeatureUnification(M, k, mode=mode).to(dtype)
    features = F.normalize(torch.randn(shape, dtype=dtype), dim=1)
    with torch.enable_grad():
        expected = lfu(features).detach()  # parameters need grad: the PyTorch path
    with torch.no_grad():
        got = lfu(features)
    torch.testing.assert_close(got, expected, **TOLERANCE[dtype])


def test_usable_only_without_gradients_on_cpu_floats():
    x = torch.randn(1, 2, 3, 3)
    assert fused.usable(x)
    assert not fused.usable(x.half())
    assert not fused.usable(x.to(torch.int32))
    w = torch.randn(2, requires_grad=True)
    assert not fused.usable(x, w)
    with torch.no_grad():
        assert fused.usable(x, w)


def test_layers_fall_back_to_torch_under_autograd():
    """With gradients needed, the layers take the PyTorch ops and gradients flow."""
    lfu = LearnedFeatureUnification(4, 3)
    out = lfu(torch.randn(1, 3, 4, 4))
    out.sum().backward()
    assert lfu.basis.grad is not None and lfu.basis.grad.abs().sum() > 0


def _doubles(*shape: int) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.float64)


@pytest.mark.parametrize('call, message', [
    (lambda: torch.ops.anyup_neck.affine_silu(torch.zeros(1, 4, 2, 2), _doubles(1, 3),
                                              _doubles(1, 4), torch.zeros(1, 4, 2, 2)),
     r'scale and shift must be contiguous float64 \(1, 4\) tensors'),
    (lambda: torch.ops.anyup_neck.affine_silu(torch.zeros(1, 4, 2, 2), *[torch.zeros(1, 4)] * 2,
                                              torch.zeros(1, 4, 2, 2)),
     'scale and shift must be contiguous float64'),
    (lambda: torch.ops.anyup_neck.affine_silu(torch.zeros(1, 4, 2, 2), _doubles(1, 4),
                                              _doubles(1, 4), torch.zeros(1, 4, 2, 3)),
     "out must have x's shape"),
    (lambda: torch.ops.anyup_neck.affine_silu(torch.zeros(1, 4, 2, 2), _doubles(1, 4),
                                              _doubles(1, 4),
                                              torch.zeros(1, 4, 2, 2).to(memory_format=torch.channels_last)),
     "out must have x's memory format"),
    (lambda: torch.ops.anyup_neck.channel_moments(torch.zeros(1, 4, 3, 3)[..., ::2]),
     'x must be NCHW- or channels-last-contiguous'),
    (lambda: torch.ops.anyup_neck.rotary_2d_(torch.zeros(1, 4, 2, 3), *[torch.zeros(2, 4)] * 2,
                                             *[torch.zeros(3, 4)] * 2),
     'x must be channels-last'),
    (lambda: torch.ops.anyup_neck.basis_softmax_mean(torch.zeros(1, 2, 3, 3),
                                                     torch.zeros(4, 1, 2, 2), False),
     r'basis must be \(M, 1, k, k\) with odd k'),
    (lambda: torch.ops.anyup_neck.basis_softmax_mean(torch.zeros(1, 2, 3, 3, dtype=torch.int32),
                                                     torch.zeros(4, 1, 3, 3), False),
     'expected float32 or float64'),
])
def test_kernels_reject_bad_arguments(call, message):
    with pytest.raises(RuntimeError, match=message):
        call()
