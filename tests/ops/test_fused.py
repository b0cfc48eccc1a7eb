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


@pytest.mark.parametrize('dtype, channels_last, onednn', [
    (torch.float32, True, torch.backends.mkldnn.is_available()),  # oneDNN's fused post-op
    (torch.float32, False, False),                                # conv + add_
    (torch.float64, True, False),
])
@pytest.mark.parametrize('shape, out_channels', [((2, 16, 5, 7), 16), ((1, 3, 1, 9), 5)])
def test_conv1x1_add_matches_conv_then_add(dtype, channels_last, onednn, shape, out_channels):
    torch.manual_seed(3)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(shape, dtype=dtype).contiguous(memory_format=layout)
    weight = torch.randn(out_channels, shape[1], 1, 1, dtype=dtype)
    acc = torch.randn(shape[0], out_channels, *shape[2:], dtype=dtype)
    acc = acc.contiguous(memory_format=layout)
    expected = acc + F.conv2d(x, weight)
    assert fused._onednn_conv_add(acc, x, weight) == onednn
    with torch.no_grad():
        assert fused.conv1x1_add_(acc, x, weight) is acc
    torch.testing.assert_close(acc, expected, **TOLERANCE[dtype])


@pytest.mark.parametrize('isa', cpu_isas())
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('shape, out_channels, rows', [
    ((2, 16, 7, 9), 16, None),        # batch 2, odd sizes: tiles cut at the right and bottom
    ((1, 3, 1, 13), 5, None),         # 1xN; channels not a multiple of the register block
    ((1, 1, 4, 4), 1, (1, 2)),        # one channel, one row from the middle
    ((2, 40, 9, 200), 48, (3, 8)),    # several runs of tiles per row; a range of rows
    ((1, 24, 6, 5), 7, (5, 6)),       # the last row alone
])
def test_conv3x3_winograd_matches_conv2d(isa, dtype, shape, out_channels, rows, monkeypatch):
    use_isa(monkeypatch, isa)
    torch.manual_seed(4)
    x = torch.randn(shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(out_channels, shape[1], 3, 3, dtype=dtype)
    begin, end = rows or (0, shape[2])
    expected = F.conv2d(x.double(), weight.double(), padding=1)[:, :, begin:end]
    got = fused.conv3x3_winograd(x, fused.winograd_weights(weight), rows)
    assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
    # Relative to the outputs' scale: the transforms round like a few more additions.
    scale = expected.abs().max()
    tolerance = 1e-13 if dtype == torch.float64 else 2e-6
    assert ((got.double() - expected).abs().max() / scale) < tolerance


@pytest.mark.parametrize('isa', cpu_isas())
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('shape, out_channels, into_rows', [
    ((2, 128, 5, 7), 128, None),     # AnyUp's width, batch 2: runs cut at 35 pixels
    ((1, 16, 1, 113), 40, None),     # 1xN, several runs, C_out not a multiple of the block
    ((1, 1, 3, 2), 3, None),         # one input channel
    ((2, 32, 6, 9), 32, (2, 8)),     # into rows 2..7 of a larger channels-last map
])
def test_rms_linear_matches_rmsnorm_then_linear(isa, dtype, shape, out_channels, into_rows,
                                                monkeypatch):
    use_isa(monkeypatch, isa)
    torch.manual_seed(5)
    x = torch.randn(shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
    norm = torch.nn.RMSNorm(shape[1], eps=1e-6).to(dtype)
    linear = torch.nn.Linear(shape[1], out_channels).to(dtype)
    with torch.no_grad():
        norm.weight.normal_()
        expected = linear(norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        folded = linear.weight * norm.weight
        if into_rows is None:
            got = fused.rms_linear(x, folded, linear.bias, norm.eps)
        else:
            r0, r1 = into_rows
            whole = torch.full((shape[0], out_channels, r1 + 1, shape[3]), 7.0, dtype=dtype)
            whole = whole.contiguous(memory_format=torch.channels_last)
            fused.rms_linear(x, folded, linear.bias, norm.eps, out=whole[:, :, r0:r1])
            assert (whole[:, :, :r0] == 7).all() and (whole[:, :, r1:] == 7).all()
            got = whole[:, :, r0:r1]
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


def _channels_last(*shape: int) -> torch.Tensor:
    return torch.zeros(shape).contiguous(memory_format=torch.channels_last)


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
    (lambda: torch.ops.anyup_neck.conv3x3_winograd(torch.zeros(1, 4, 3, 3), torch.zeros(16, 4, 2),
                                                   0, 3),
     'x must be channels-last'),
    (lambda: torch.ops.anyup_neck.conv3x3_winograd(_channels_last(1, 4, 3, 3),
                                                   torch.zeros(16, 3, 2), 0, 3),
     r'weights must be contiguous \(16, 4, C_out\)'),
    (lambda: torch.ops.anyup_neck.conv3x3_winograd(_channels_last(1, 4, 3, 3),
                                                   torch.zeros(16, 4, 2), 2, 4),
     r'expected 0 <= row_begin < row_end <= 3, got 2 and 4'),
    (lambda: torch.ops.anyup_neck.rms_linear(torch.zeros(1, 4, 2, 3), torch.zeros(5, 4),
                                             torch.zeros(5), 1e-6, torch.zeros(1, 5, 2, 3)),
     "x and out must have each image's pixels channels-last-contiguous"),
    (lambda: torch.ops.anyup_neck.rms_linear(_channels_last(1, 4, 2, 3), torch.zeros(5, 3),
                                             torch.zeros(5), 1e-6, _channels_last(1, 5, 2, 3)),
     r'expected weight \(5, 4\) and bias \(5\)'),
    (lambda: fused.winograd_weights(torch.zeros(2, 4, 5, 5)),
     r'weight: expected shape \(C_out, C_in, 3, 3\)'),
])
def test_kernels_reject_bad_arguments(call, message):
    with pytest.raises((RuntimeError, ValueError), match=message):
        call()
