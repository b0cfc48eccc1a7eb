"""The fused primitives against the PyTorch ops they replace: the compiled CPU kernels on every
instruction set, and the GPU formulations (run here on the CPU) in every dtype, with gradcheck
where autograd differentiates them."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from anyup_neck.ops import fused
from anyup_neck.upsampler import LearnedFeatureUnification, RoPE
from tests.numerics import relative_error
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
def test_group_norm_silu_matches_torch(isa, dtype, shape, groups, channels_last):
    use_isa(isa)
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
        assert fused.group_norm_silu(same, norm, overwrite=True) is same
        torch.testing.assert_close(same, expected, **TOLERANCE[dtype])


@pytest.mark.parametrize('isa', cpu_isas())
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('shape', [(2, 16, 5, 7), (1, 8, 1, 11), (1, 128, 9, 3)])
def test_rotary_2d_matches_the_rope_layer(isa, dtype, shape):
    use_isa(isa)
    torch.manual_seed(1)
    rope = RoPE(shape[1]).to(dtype)
    with torch.no_grad():
        rope.freqs.add_(0.1 * torch.randn_like(rope.freqs))  # checkpoints override the init
    x = torch.randn(shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = rope(x.contiguous())  # NCHW: the PyTorch path
        got = rope(x, overwrite=True)    # channels-last: the fused kernel, in place
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
def test_basis_softmax_mean_matches_the_lfu_layer(isa, dtype, mode, M, k, shape):
    use_isa(isa)
    torch.manual_seed(2)
    lfu = LearnedFeatureUnification(M, k, mode=mode).to(dtype)
    features = F.normalize(torch.randn(shape, dtype=dtype), dim=1)
    with torch.enable_grad():
        expected = lfu(features).detach()  # parameters need grad: the PyTorch path
    with torch.no_grad():
        got = lfu(features)
    torch.testing.assert_close(got, expected, **TOLERANCE[dtype])


@pytest.mark.parametrize('dtype, channels_last, path', [
    (torch.float32, True, 'onednn' if torch.backends.mkldnn.is_available() else 'conv'),
    (torch.float32, False, 'conv'),                               # conv + add_
    (torch.float64, True, 'conv'),
    (torch.bfloat16, True, 'gemm'),                               # addmm over the pixels
    (torch.float16, True, 'gemm'),
    (torch.bfloat16, False, 'gemm'),                              # baddbmm per image
    (torch.bfloat16, None, 'conv'),                               # mixed layouts
])
@pytest.mark.parametrize('shape, out_channels', [((2, 16, 5, 7), 16), ((1, 3, 1, 9), 5)])
def test_conv1x1_add_matches_conv_then_add(dtype, channels_last, path, shape, out_channels):
    """In place and not, against float64; the result keeps acc's layout."""
    torch.manual_seed(3)
    layout = torch.contiguous_format if channels_last is False else torch.channels_last
    x = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=layout)
    weight = torch.randn(out_channels, shape[1], 1, 1, dtype=torch.float64)
    acc = torch.randn(shape[0], out_channels, *shape[2:], dtype=torch.float64)
    acc = acc.contiguous(memory_format=torch.contiguous_format if channels_last is None else layout)
    expected = acc + F.conv2d(x, weight)
    x, weight, acc = x.to(dtype), weight.to(dtype), acc.to(dtype)
    assert fused._onednn_conv_add(acc, x, weight) == (path == 'onednn')
    assert (fused._gemm_layout(acc, x, weight) is not None) == (path == 'gemm')
    with torch.no_grad():
        summed = fused.conv1x1_add(acc, x, weight)
        assert summed is not acc
        assert channels_last is None or summed.stride() == acc.stride()
        assert fused.conv1x1_add(acc, x, weight, in_place=True) is acc
    for got in (summed, acc):
        if dtype in TOLERANCE:
            torch.testing.assert_close(got, expected.to(dtype), **TOLERANCE[dtype])
        else:
            assert relative_error(got.double(), expected) < REDUCED[dtype]


@pytest.mark.parametrize('layout', [torch.channels_last, torch.contiguous_format])
def test_conv1x1_add_gemm_gradients(layout):
    """The GEMM paths under autograd: gradients of acc, x and the weight against float64."""
    torch.manual_seed(4)
    acc, x = (torch.randn(2, c, 5, 3).contiguous(memory_format=layout) for c in (8, 6))
    weight = torch.randn(8, 6, 1, 1)
    grad = torch.randn(2, 8, 5, 3)
    reduced = [t.bfloat16().requires_grad_() for t in (acc, x, weight)]
    assert fused._gemm_layout(*reduced) == layout
    fused.conv1x1_add(*reduced).backward(grad.bfloat16())
    exact = [t.double().requires_grad_() for t in (acc, x, weight)]
    (exact[0] + F.conv2d(exact[1], exact[2])).backward(grad.double())
    for got, expected in zip(reduced, exact):
        assert relative_error(got.grad.double(), expected.grad) < REDUCED[torch.bfloat16]


@pytest.mark.parametrize('isa', cpu_isas())
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('shape, out_channels, rows', [
    ((2, 16, 7, 9), 16, None),        # batch 2, odd sizes: tiles cut at the right and bottom
    ((1, 3, 1, 13), 5, None),         # 1xN; channels not a multiple of the register block
    ((1, 1, 4, 4), 1, (1, 2)),        # one channel, one row from the middle
    ((2, 40, 9, 200), 48, (3, 8)),    # several runs of tiles per row; a range of rows
    ((1, 24, 6, 5), 7, (5, 6)),       # the last row alone
])
def test_conv3x3_winograd_matches_conv2d(isa, dtype, shape, out_channels, rows):
    use_isa(isa)
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
def test_rms_linear_matches_rmsnorm_then_linear(isa, dtype, shape, out_channels, into_rows):
    use_isa(isa)
    torch.manual_seed(5)
    x = torch.randn(shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
    norm = torch.nn.RMSNorm(shape[1], eps=1e-6).to(dtype)
    linear = torch.nn.Linear(shape[1], out_channels).to(dtype)
    with torch.no_grad():
        norm.weight.normal_()
        expected = linear(norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        params = (norm.weight, linear.weight, linear.bias, norm.eps)
        if into_rows is None:
            got = fused.rms_linear(x, *params)
        else:
            r0, r1 = into_rows
            whole = torch.full((shape[0], out_channels, r1 + 1, shape[3]), 7.0, dtype=dtype)
            whole = whole.contiguous(memory_format=torch.channels_last)
            fused.rms_linear(x, *params, out=whole[:, :, r0:r1])
            assert (whole[:, :, :r0] == 7).all() and (whole[:, :, r1:] == 7).all()
            got = whole[:, :, r0:r1]
    torch.testing.assert_close(got, expected, **TOLERANCE[dtype])


def test_cpu_kernels_usable_only_without_gradients_on_cpu_floats():
    x = torch.randn(1, 2, 3, 3)
    assert fused.cpu_kernels_usable(x)
    assert not fused.cpu_kernels_usable(x.half())
    assert not fused.cpu_kernels_usable(x.to(torch.int32))
    assert not fused.cpu_kernels_usable(x.to('meta'))
    w = torch.randn(2, requires_grad=True)
    assert not fused.cpu_kernels_usable(x, w)
    with torch.no_grad():
        assert fused.cpu_kernels_usable(x, w)


def test_layers_fall_back_to_torch_under_autograd():
    """With gradients needed, the layers take the PyTorch ops and gradients flow."""
    lfu = LearnedFeatureUnification(4, 3)
    out = lfu(torch.randn(1, 3, 4, 4))
    out.sum().backward()
    assert lfu.basis.grad is not None and lfu.basis.grad.abs().sum() > 0


# -- the GPU formulations, run on the CPU ---------------------------------------------------
#: tolerance of reduced-precision results against float64, relative to the outputs' scale
REDUCED = {torch.bfloat16: 2e-2, torch.float16: 4e-3}


@pytest.mark.parametrize('shape, groups, channels_last', [
    ((2, 16, 7, 9), 4, True),
    ((1, 24, 1, 13), 8, False),
    ((3, 8, 45, 50), 8, True),
    ((1, 1, 3, 4), 1, False),
])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_group_norm_silu_by_reductions_matches_torch(shape, groups, channels_last, dtype):
    torch.manual_seed(6)
    x64 = 3 * torch.randn(shape, dtype=torch.float64) + 2   # mean far from 0
    norm64 = _group_norm(shape[1], groups, torch.float64)
    expected = F.silu(norm64(x64)).detach()
    x = x64.to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    norm = _group_norm(shape[1], groups, dtype if dtype in TOLERANCE else torch.float32)
    norm.load_state_dict(norm64.state_dict())
    with torch.no_grad():
        got = fused.group_norm_silu_by_reductions(x, norm)
        assert got.dtype == dtype and got.stride() == x.stride()
        same = x.clone(memory_format=torch.preserve_format)
        assert fused.group_norm_silu_by_reductions(same, norm, overwrite=True) is same
    for result in (got, same):
        if dtype in TOLERANCE:
            torch.testing.assert_close(result, expected.to(dtype), **TOLERANCE[dtype])
        else:  # rounding of x to the reduced type and of the output; statistics in float32
            assert relative_error(result, F.silu(norm64(x.double())).detach()) < REDUCED[dtype]


@pytest.mark.parametrize('shape, groups, channels_last', [
    ((2, 6, 3, 4), 3, False),
    ((2, 6, 3, 4), 3, True),
    ((1, 1, 1, 5), 1, False),        # one channel, 1xN
    ((3, 8, 5, 2), 2, True),         # batch 3, non-square
])
def test_group_norm_silu_by_reductions_gradcheck(shape, groups, channels_last):
    """Under autograd the formulation is one autograd.Function with its own backward."""
    torch.manual_seed(7)
    norm = _group_norm(shape[1], groups, torch.float64)
    x = 3 * torch.randn(shape, dtype=torch.float64) + 2
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    x.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t, w, b: fused.group_norm_silu_by_reductions(
            t, _with_affine(norm, w, b), overwrite=True),   # ignored under autograd
        (x, norm.weight, norm.bias))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
def test_group_norm_silu_by_reductions_gradients_in_every_dtype(dtype):
    """Gradients of x (in x's dtype and layout), weight and bias against float64 autograd
    through ``silu(group_norm(x))``."""
    torch.manual_seed(8)
    norm64 = _group_norm(16, 4, torch.float64)
    x64 = (2 * torch.randn(2, 16, 9, 7, dtype=torch.float64) + 1).requires_grad_()
    grad = torch.randn(2, 16, 9, 7, dtype=torch.float64)
    F.silu(norm64(x64)).backward(grad)
    norm = _group_norm(16, 4, torch.float32)
    norm.load_state_dict(norm64.state_dict())
    x = x64.detach().to(dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
    fused.group_norm_silu_by_reductions(x, norm).backward(grad.to(dtype))
    assert x.grad.dtype == dtype and x.grad.stride() == x.stride()
    tolerance = 1e-5 if dtype == torch.float32 else REDUCED[dtype]
    for got, expected in ((x.grad, x64.grad), (norm.weight.grad, norm64.weight.grad),
                          (norm.bias.grad, norm64.bias.grad)):
        assert relative_error(got.double(), expected) < tolerance


@pytest.mark.parametrize('mean', [0.0, 40.0])
def test_group_norm_silu_by_reductions_bfloat16_gradients_at_a_large_mean(mean):
    """bfloat16 x and gradient: the backward's terms are float32 (g, g * x), so the weight and
    bias gradients are float32 sums of them, even at a mean 40 times the spread (against
    float64 autograd on the same rounded x and gradient); dx is rounded once, to bfloat16.
    (bfloat16 maps of g and g * x would cost dweight 3e-2 here, and dx 7e-2.)"""
    torch.manual_seed(10)
    norm64 = _group_norm(16, 4, torch.float64)
    x = (torch.randn(2, 16, 11, 13, dtype=torch.float64) + mean).bfloat16()
    grad = torch.randn(2, 16, 11, 13, dtype=torch.float64).bfloat16()
    x64 = x.double().requires_grad_()
    F.silu(norm64(x64)).backward(grad.double())
    norm = _group_norm(16, 4, torch.float32)
    norm.load_state_dict(norm64.state_dict())
    x.requires_grad_()
    fused.group_norm_silu_by_reductions(x, norm).backward(grad)
    assert x.grad.dtype == torch.bfloat16
    assert relative_error(x.grad.double(), x64.grad) < 5e-3
    assert relative_error(norm.weight.grad.double(), norm64.weight.grad) < 1e-3
    assert relative_error(norm.bias.grad.double(), norm64.bias.grad) < 1e-3


def test_group_norm_silu_by_reductions_saves_only_its_input():
    """Autograd keeps x and the (B, G) statistics for the backward, not the normalised map
    (autograd through the PyTorch ops keeps that too: twice the memory)."""
    torch.manual_seed(9)
    norm = _group_norm(16, 4, torch.float32)
    x = torch.randn(2, 16, 12, 10, requires_grad=True)
    saved = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fused.group_norm_silu_by_reductions(x, norm)
    large = [n for n in saved.values() if n >= x.numel() * x.element_size()]
    assert large == [x.numel() * x.element_size()]


def _with_affine(norm: torch.nn.GroupNorm, weight: torch.Tensor,
                 bias: torch.Tensor) -> torch.nn.GroupNorm:
    """A functional view of ``norm`` with the given affine parameters (for gradcheck)."""
    view = torch.nn.GroupNorm(norm.num_groups, norm.num_channels, eps=norm.eps)
    del view.weight, view.bias
    view.weight, view.bias = weight, bias
    return view


@pytest.mark.parametrize('paths', ['kernel', 'formulation'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.bfloat16])
def test_rms_linear_paths_match_rmsnorm_then_linear(paths, dtype, monkeypatch):
    if paths == 'formulation':
        monkeypatch.setattr(fused, 'cpu_kernels_usable', lambda *t: False)
    torch.manual_seed(8)
    shape, out_channels = (2, 24, 5, 7), 16
    x64 = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    norm = torch.nn.RMSNorm(shape[1]).double()
    linear = torch.nn.Linear(shape[1], out_channels).double()
    with torch.no_grad():
        norm.weight.normal_()
        eps = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
        expected = linear(F.rms_norm(x64.to(dtype).double().permute(0, 2, 3, 1), (shape[1],),
                                     norm.weight, eps)).permute(0, 3, 1, 2)
        params = [t.to(dtype) for t in (norm.weight, linear.weight, linear.bias)]
        got = fused.rms_linear(x64.to(dtype), *params)
    assert got.dtype == dtype
    if dtype in TOLERANCE:
        torch.testing.assert_close(got, expected.to(dtype), **TOLERANCE[dtype])
    else:
        assert relative_error(got, expected) < REDUCED[dtype]


def test_rms_linear_formulation_gradcheck():
    """Under autograd (any device) rms_linear is the conv formulation, differentiated."""
    torch.manual_seed(9)
    args = [torch.randn(2, 5, 3, 2, dtype=torch.float64), torch.randn(5, dtype=torch.float64),
            torch.randn(4, 5, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    args = [a.requires_grad_() for a in args]
    assert torch.autograd.gradcheck(lambda *t: fused.rms_linear(*t, 1e-6), args)


@pytest.mark.parametrize('layout', [torch.channels_last, torch.contiguous_format],
                         ids=['cpu-kernel', 'gpu-formulation'])
@pytest.mark.parametrize('overwrite', [False, True])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('shape, out_channels', [
    ((2, 16, 9, 7), 16),    # batch 2, odd rows: several blocks, the last one short
    ((1, 8, 1, 13), 8),     # one row
    ((1, 8, 6, 5), 12),     # more output channels than input: never written over x
])
def test_conv3x3_rms_linear_matches_conv_then_projection(overwrite, dtype, shape, out_channels,
                                                         layout, monkeypatch):
    """Both formulations, into x with ``overwrite`` where the result has x's shape."""
    monkeypatch.setattr(fused, 'max_piece_elements', shape[1] * shape[3] * 2)  # 2-row blocks
    torch.manual_seed(10)
    x = torch.randn(shape, dtype=dtype).contiguous(memory_format=layout)
    conv = torch.randn(shape[1], shape[1], 3, 3, dtype=dtype)
    gain, weight = torch.randn(shape[1], dtype=dtype), torch.randn(out_channels, shape[1], dtype=dtype)
    bias = torch.randn(out_channels, dtype=dtype)
    convolved = F.conv2d(x.double(), conv.double(), padding=1).permute(0, 2, 3, 1)
    expected = F.linear(F.rms_norm(convolved, (shape[1],), gain.double(),
                                   torch.finfo(dtype).eps), weight.double(), bias.double())
    expected = expected.permute(0, 3, 1, 2)
    scratch = x.clone()
    with torch.no_grad():
        got = fused.conv3x3_rms_linear(scratch, conv, gain, weight, bias, overwrite=overwrite)
    assert (got.data_ptr() == scratch.data_ptr()) == (overwrite and out_channels == shape[1])
    tolerance = 1e-12 if dtype == torch.float64 else 2e-5
    assert relative_error(got, expected) < tolerance


@pytest.mark.parametrize('overwrite', [False, True])
def test_rotary_2d_in_row_blocks_equals_the_whole_map(overwrite, monkeypatch):
    """Without the kernel the rotation goes in blocks of rows (here of 9 rows, 2 in place and
    4 out of place, whose temporaries hold no copy of x; the last one short), as under autograd
    (the function's forward)."""
    torch.manual_seed(16)
    rope = RoPE(8).double()
    x = torch.randn(2, 8, 9, 5, dtype=torch.float64)
    whole = rope(x)                                          # one block
    monkeypatch.setattr(fused, 'max_piece_elements', 2 * 8 * 5 * 2)
    scratch = x.clone()
    trained = rope(x)                                        # autograd (freqs), in blocks
    with torch.no_grad():
        blocked = rope(scratch, overwrite=overwrite)
    assert (blocked.data_ptr() == scratch.data_ptr()) == overwrite
    for got in (blocked, trained.detach()):
        torch.testing.assert_close(got, whole.detach(), rtol=1e-12, atol=1e-12)


def test_gpu_maps_of_448x448_are_one_piece(monkeypatch):
    """On a GPU (faked here: shapes only) a 448x448 map of 128 channels is rotated in one block
    of rows, not in the CPU's cache-sized blocks, and without a turned copy (no cat)."""
    blocks, block_tables = [], fused._block_tables
    monkeypatch.setattr(fused, '_block_tables',
                        lambda x, tables, rows: blocks.append(rows) or block_tables(x, tables,
                                                                                   rows))

    class CountCats(TorchDispatchMode):
        cats = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.cats += func.overloadpacket == torch.ops.aten.cat
            return func(*args, **(kwargs or {}))

    with FakeTensorMode(), torch.device('cuda'), torch.no_grad():
        rope, x = RoPE(128), torch.empty(1, 128, 448, 448)
        assert fused.piece_elements(x) == fused.max_gpu_piece_elements > x.numel()
        with CountCats() as counter:
            rope(x, overwrite=True)
    assert blocks == [slice(0, 448)] and counter.cats == 0
    assert fused.piece_elements(torch.empty(1)) == fused.max_piece_elements


@pytest.mark.parametrize('channels_last', [False, True])
def test_rotary_block_tables_are_the_angles_in_the_maps_layout(channels_last):
    """A block's cos and signed sin (its first channel half negated), from the per-row and
    per-column tables, are those of the summed angle, laid out like the map's pixels (an
    elementwise op reads both in runs)."""
    torch.manual_seed(17)
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rows, cols = torch.randn(5, 6, dtype=torch.float64), torch.randn(7, 6, dtype=torch.float64)
    cos, signed_sin = fused._block_tables(x, fused._rotary_tables(x, rows, cols), slice(1, 4))
    angle = (rows[1:4, None] + cols[None]).permute(2, 0, 1)                  # (D, 3, W)
    sign = torch.tensor([-1.0] * 3 + [1.0] * 3, dtype=torch.float64)[:, None, None]
    torch.testing.assert_close(cos, angle.cos(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(signed_sin, sign * angle.sin(), rtol=1e-12, atol=1e-12)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert cos[None].is_contiguous(memory_format=layout)
    assert signed_sin[None].is_contiguous(memory_format=layout)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_rotary_2d_in_reduced_precision(dtype):
    """The angles' cos/sin are taken in float32: only the data are rounded."""
    torch.manual_seed(11)
    rope = RoPE(16)
    x64 = torch.randn(2, 16, 9, 11, dtype=torch.float64)
    with torch.no_grad():
        expected = rope.double()(x64.clone())
        got = rope.float()(x64.to(dtype), overwrite=True)
    assert got.dtype == dtype
    assert relative_error(got, expected) < REDUCED[dtype]


@pytest.mark.parametrize('mode', ['official', 'paper'])
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_basis_softmax_mean_in_reduced_precision(mode, dtype):
    torch.manual_seed(12)
    lfu = LearnedFeatureUnification(8, 3, mode=mode)
    features = F.normalize(torch.randn(2, 5, 6, 7, dtype=torch.float64), dim=1)
    with torch.no_grad():
        expected = lfu.double()(features)
        got = lfu.to(dtype)(features.to(dtype))
    assert got.dtype == dtype
    assert relative_error(got, expected) < REDUCED[dtype]


def test_basis_softmax_mean_formulation_gradcheck():
    torch.manual_seed(13)
    features = torch.randn(1, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    basis = torch.randn(4, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    for per_channel in (False, True):
        assert torch.autograd.gradcheck(
            lambda f, b: fused.basis_softmax_mean(f, b, per_channel), (features, basis))


def _doubles(*shape: int) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.float64)


def _channels_last(*shape: int) -> torch.Tensor:
    return torch.zeros(shape).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('call, message', [
    (lambda: torch.ops.anyup_neck.affine_silu(torch.zeros(1, 4, 2, 2), _doubles(1, 3),
                                              _doubles(1, 4), torch.zeros(1, 4, 2, 2)),
     r'affine_silu: coefficients must be contiguous float32 or float64 \(1, 4\) tensors'),
    (lambda: torch.ops.anyup_neck.affine_silu(torch.zeros(1, 4, 2, 2),
                                              *[torch.zeros(1, 4, dtype=torch.bfloat16)] * 2,
                                              torch.zeros(1, 4, 2, 2)),
     'coefficients must be contiguous float32 or float64'),
    (lambda: torch.ops.anyup_neck.group_norm_coefficients(
        torch.zeros(1, 6, 2, 2), torch.zeros(6), torch.zeros(6), 4, 1e-5),
     "group_norm_coefficients: groups must divide x's 6 channels, got 4"),
    (lambda: torch.ops.anyup_neck.group_norm_coefficients(
        torch.zeros(1, 6, 2, 2), torch.zeros(5), torch.zeros(6), 3, 1e-5),
     r'weight and bias must be floating \(6\) tensors'),
    (lambda: torch.ops.anyup_neck.group_norm_coefficients(
        torch.zeros(1, 6, 0, 2), torch.zeros(6), torch.zeros(6), 3, 1e-5),
     'x must have pixels'),
    (lambda: torch.ops.anyup_neck.affine_silu_grad_sums(
        torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2, dtype=torch.float64),
        *[torch.zeros(1, 4)] * 3), "affine_silu_grad_sums: grad must have x's dtype"),
    (lambda: torch.ops.anyup_neck.affine_silu_grad_sums(
        torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2).to(memory_format=torch.channels_last),
        *[torch.zeros(1, 4)] * 3), "grad must have x's memory format"),
    (lambda: torch.ops.anyup_neck.group_norm_silu_input_grad(
        *[torch.zeros(1, 4, 2, 2)] * 2, *[torch.zeros(1, 4)] * 5, torch.zeros(4)),
     r'group_norm_silu_input_grad: coefficients must be contiguous float32 or float64 \(1, 4\)'),
    (lambda: torch.ops.anyup_neck.group_norm_silu_input_grad(
        torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 3), *[torch.zeros(1, 4)] * 6),
     "grad must have x's shape and device"),
    (lambda: torch.ops.anyup_neck.group_norm_silu_input_grad(
        *[torch.zeros(1, 4, 2, 2)] * 2, *[torch.zeros(1, 4)] * 6,
        torch.zeros(1, 4, 2, 2, dtype=torch.float64)),
     "group_norm_silu_input_grad: residual must have x's dtype Float, got Double"),
    (lambda: torch.ops.anyup_neck.group_norm_silu_input_grad(
        *[torch.zeros(1, 4, 2, 2)] * 2, *[torch.zeros(1, 4)] * 6, _channels_last(1, 4, 2, 2)),
     "residual must have x's memory format"),
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


def _rotary_reference(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                      transpose: bool = False) -> torch.Tensor:
    """The rotary map from its definition, angle = rows[i] + cols[j] per channel (autograd
    through it): x cos + turn(x) sin, turn(x) = cat(-x2, x1); transposed, x cos -
    turn(x) swap(sin) with swap exchanging the channel halves."""
    angle = (rows[:, None] + cols[None]).permute(2, 0, 1)          # (D, H, W)
    x1, x2 = x.chunk(2, dim=1)
    sin = -angle.sin().roll(x.shape[1] // 2, dims=0) if transpose else angle.sin()
    return x * angle.cos() + torch.cat([-x2, x1], dim=1) * sin


@pytest.mark.parametrize('channels_last', [False, True], ids=['pytorch', 'cpu-kernel'])
@pytest.mark.parametrize('shape', [(2, 8, 5, 7), (1, 4, 1, 9), (3, 4, 6, 1)])
def test_rotary_2d_gradients(channels_last, shape):
    """Under autograd: the output and the gradients of x and both angle tables against autograd
    through the definition (any angles: each channel of a pair turns by its own, so the map is
    not a rotation), and gradcheck; channels-last runs the CPU kernel both ways (the transposed
    map in the backward)."""
    torch.manual_seed(25)
    B, D, H, W = shape
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    rows = torch.randn(H, D, dtype=torch.float64, requires_grad=True)
    cols = torch.randn(W, D, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(shape, dtype=torch.float64)
    results = []
    for rotate in (fused.rotary_2d, _rotary_reference):
        x.grad = rows.grad = cols.grad = None
        y = rotate(x, rows, cols)
        y.backward(grad)
        results.append([y.detach(), x.grad, rows.grad, cols.grad])
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(fused.rotary_2d, (x, rows, cols))


def test_rotary_2d_saves_only_its_input_and_tables():
    """For the backward the function keeps x and the (n, D) cos/sin tables; autograd through
    the PyTorch ops also kept full-size cos, sin and turned maps."""
    x = torch.randn(2, 8, 6, 5, requires_grad=True)
    rows, cols = torch.randn(6, 8, requires_grad=True), torch.randn(5, 8, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t,
                                                  lambda t: t):
        fused.rotary_2d(x, rows, cols)
    assert [shape for shape in saved if len(shape) == 4] == [x.shape]


# -- the channel-row ops: the CUDA kernels' row code, run on the CPU ----------------------------
def _misaligned(x: torch.Tensor) -> torch.Tensor:
    """A copy of x (same layout) whose data starts one element into its storage."""
    storage = torch.empty(x.numel() + 1, dtype=x.dtype)
    copy = storage[1:].as_strided(x.shape, x.stride())
    return copy.copy_(x)


#: (shape, channels_last): rows of whole vector runs, partial runs, one channel, rows longer than
#: a block's runs, long rows of W = 1
ROW_CASES = [((2, 16, 4, 6), False), ((2, 16, 4, 6), True), ((3, 5, 7, 3), False),
             ((3, 13, 7, 3), True), ((1, 1, 1, 9), False), ((1, 1536, 2, 3), True),
             ((2, 3, 300, 1), False)]
ROW_DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


def _row_inputs(shape, channels_last, dtype, count, seed):
    """x (dtype, layout), ``count`` (B, C) coefficients in the arithmetic's dtype, and that
    dtype."""
    torch.manual_seed(seed)
    x = (3 * torch.randn(shape, dtype=torch.float64) + 1).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    arithmetic = torch.float64 if dtype == torch.float64 else torch.float32
    return x, torch.randn(count, *shape[:2], dtype=arithmetic), arithmetic


def _row_tolerance(dtype, ulps: int = 2):
    """Same arithmetic; exp may differ in the last bit, then one rounding to dtype (``ulps``
    where several roundings can each go their own way)."""
    eps = 1e-12 if dtype == torch.float64 else ulps * torch.finfo(dtype).eps
    return dict(rtol=eps, atol=eps)


def _channel(t: torch.Tensor) -> torch.Tensor:
    return t[:, :, None, None]


@pytest.mark.parametrize('dtype', ROW_DTYPES)
@pytest.mark.parametrize('shape, channels_last', ROW_CASES)
def test_affine_silu_row_code(dtype, shape, channels_last):
    """affine_silu's CUDA element code on the CPU: out of place, in place and from misaligned
    data."""
    x, (scale, shift), arithmetic = _row_inputs(shape, channels_last, dtype, 2, 16)
    expected = F.silu(x.to(arithmetic) * _channel(scale) + _channel(shift)).to(dtype)
    out = torch.empty_like(x)
    in_place = x.clone(memory_format=torch.preserve_format)
    misaligned = _misaligned(x)
    torch.ops.anyup_neck._affine_silu_rows(x, scale, shift, out)
    torch.ops.anyup_neck._affine_silu_rows(in_place, scale, shift, in_place)
    torch.ops.anyup_neck._affine_silu_rows(misaligned, scale, shift, misaligned)
    for got in (out, in_place, misaligned):
        assert got.stride() == x.stride()
        torch.testing.assert_close(got, expected, **_row_tolerance(dtype))


def _silu_backward_inputs(shape, channels_last, dtype, count, seed):
    """x and grad (dtype, layout), ``count`` (B, C) coefficients, the arithmetic's dtype and
    g = grad * silu'(x * scale + shift) in float64 from the rounded inputs (the first two
    coefficients are scale and shift)."""
    x, coefs, arithmetic = _row_inputs(shape, channels_last, dtype, count, seed)
    grad = torch.randn(shape, dtype=torch.float64).to(dtype).contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    z = x.double() * _channel(coefs[0].double()) + _channel(coefs[1].double())
    return x, grad, coefs, arithmetic, torch.ops.aten.silu_backward(grad.double(), z)


#: ROW_CASES and maps of several pieces per sum: 3 slices of pixels (channels-last), 3 pieces
#: of a row's runs (NCHW)
SUM_CASES = ROW_CASES + [((2, 13, 11, 13), True), ((2, 5, 37, 29), False)]


def _groups(channels: int) -> int:
    return next(g for g in (8, 3, 1) if channels % g == 0)


@pytest.mark.parametrize('offset, spread', [(0.0, 1.0), (1e3, 1.0), (1e3, 1e-3)],
                         ids=['centred', 'offset', 'narrow'])
@pytest.mark.parametrize('dtype', ROW_DTYPES)
@pytest.mark.parametrize('shape, channels_last', SUM_CASES)
def test_group_norm_coefficients_row_code(dtype, shape, channels_last, offset, spread):
    """Statistics and affine map against float64 from the same (rounded) input, also with a
    mean 1000 and a million times the spread (a one-pass variance without the shifts, or channel
    means subtracted at the mean's size, lose it in float32); the same bits from misaligned
    data."""
    torch.manual_seed(26)
    B, C = shape[:2]
    groups = _groups(C)
    x = (spread * torch.randn(shape, dtype=torch.float64) + offset).to(dtype).contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    weight, bias = torch.randn(C), torch.randn(C)
    got = torch.ops.anyup_neck.group_norm_coefficients(x, weight, bias, groups, 1e-5)
    var, mean = torch.var_mean(x.double().unflatten(1, (groups, -1)), dim=(2, 3, 4),
                               correction=0)
    rstd = (var + 1e-5).rsqrt()
    scale = weight.double().view(groups, -1) * rstd[..., None]
    shift = bias.double().view(groups, -1) - mean[..., None] * scale
    arithmetic = torch.float64 if dtype == torch.float64 else torch.float32
    # float64: the reference's own deviations from a mean 1e6 times their size carry 1e-10
    tolerance = 1e-9 if dtype == torch.float64 else 2e-5
    # errors relative to each value's scale: a mean's is the spread plus its size
    spread = mean.abs() + var.sqrt()
    sizes = (scale.abs(), bias.double().abs().view(groups, -1) + scale.abs() * spread[..., None],
             spread, rstd)
    for value, expected, size in zip(got, (scale, shift, mean, rstd), sizes):
        assert value.dtype == arithmetic
        error = (value.double() - expected.flatten(1)).abs()
        assert (error <= tolerance * size.flatten(1)).all()
    again = torch.ops.anyup_neck.group_norm_coefficients(_misaligned(x), weight, bias, groups,
                                                         1e-5)
    assert all(torch.equal(a, b) for a, b in zip(again, got))


@pytest.mark.parametrize('dtype', ROW_DTYPES)
@pytest.mark.parametrize('shape, channels_last', SUM_CASES)
def test_affine_silu_grad_sums_row_code(dtype, shape, channels_last):
    """Per (b, c) sum(g) and sum(g * (x - center)) in the arithmetic's dtype against float64;
    the same bits from misaligned data (the same order of additions) and from a second call."""
    x, grad, (scale, shift, center), arithmetic, g = _silu_backward_inputs(
        shape, channels_last, dtype, 3, 17)
    centred = x.double() - _channel(center.double())
    expected = torch.stack([g.sum(dim=(2, 3)), (g * centred).sum(dim=(2, 3))], dim=1)
    got = torch.ops.anyup_neck.affine_silu_grad_sums(x, grad, scale, shift, center)
    assert got.dtype == arithmetic and got.shape == (shape[0], 2, shape[1])
    # each term a few roundings off; the sums' scale is sum(|term|)
    scale_of_terms = torch.stack([g.abs().sum(dim=(2, 3)),
                                  (g * centred).abs().sum(dim=(2, 3))], dim=1)
    bound = (1e-13 if dtype == torch.float64 else 64 * torch.finfo(torch.float32).eps)
    assert ((got.double() - expected).abs() <= bound * scale_of_terms + 1e-30).all()
    again = torch.ops.anyup_neck.affine_silu_grad_sums(_misaligned(x), _misaligned(grad),
                                                       scale, shift, center)
    assert torch.equal(again, got)


@pytest.mark.parametrize('dtype', ROW_DTYPES)
@pytest.mark.parametrize('shape, channels_last', ROW_CASES)
def test_group_norm_silu_input_grad_row_code(dtype, shape, channels_last):
    """coef_g * g + coef_x * (x - center) + coef with g recomputed, in x's dtype and layout,
    and with a residual gradient added in the same pass; aligned and not."""
    x, grad, coefs, arithmetic, g = _silu_backward_inputs(shape, channels_last, dtype, 6, 18)
    coef_g, coef_x, coef, center = (_channel(c.double()) for c in coefs[2:])
    residual = torch.randn(shape, dtype=torch.float64).to(dtype).contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    dx = coef_g * g + coef_x * (x.double() - center) + coef
    # float32/float64: a few roundings in the formula, terms of up to about 10; float16 and
    # bfloat16: their final rounding, either way of a boundary
    reduced = dtype in (torch.float16, torch.bfloat16)
    tolerance = _row_tolerance(dtype, 2) if reduced else _row_tolerance(arithmetic, 64)
    for xs, grads, residuals in ((x, grad, residual),
                                 (_misaligned(x), _misaligned(grad), _misaligned(residual))):
        for added, expected in ((None, dx), (residuals, dx + residual.double())):
            got = torch.ops.anyup_neck.group_norm_silu_input_grad(xs, grads, *coefs, added)
            assert got.dtype == dtype and got.stride() == x.stride()
            torch.testing.assert_close(got, expected.to(dtype), **tolerance)


@pytest.mark.parametrize('dtype', ROW_DTYPES)
@pytest.mark.parametrize('shape, channels_last', [
    ((2, 32, 4, 6), False), ((2, 32, 4, 6), True),     # whole runs: 16 channels, 24 pixels
    ((1, 8, 5, 3), False), ((1, 8, 5, 3), True),       # partial runs: 4 channels, 15 pixels
    ((3, 4, 1, 13), True), ((1, 128, 9, 7), False),    # 1xN; runs crossing image rows
])
@pytest.mark.parametrize('transpose', [False, True])
def test_rotary_2d_row_code(dtype, shape, channels_last, transpose):
    """rotary_2d_'s CUDA element code on the CPU, in place, aligned and not, the map and its
    transpose, against the definition in float64."""
    torch.manual_seed(22)
    B, D, H, W = shape
    rows, cols = torch.randn(H, D, dtype=torch.float64), torch.randn(W, D, dtype=torch.float64)
    x64 = torch.randn(shape, dtype=torch.float64)
    expected = _rotary_reference(x64, rows, cols, transpose)
    arithmetic = torch.float64 if dtype == torch.float64 else torch.float32
    tables = [t.to(arithmetic) for t in (rows.cos(), rows.sin(), cols.cos(), cols.sin())]
    x = x64.to(dtype).contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    for got in (x.clone(memory_format=torch.preserve_format), _misaligned(x)):
        torch.ops.anyup_neck._rotary_2d_rows_(got, *tables, transpose)
        assert got.stride() == x.stride()
        if dtype == torch.float64:
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        else:   # x rounded to dtype, float32 arithmetic, one rounding of the result
            assert relative_error(got.double(), expected) < 4 * torch.finfo(dtype).eps


def test_rope_through_the_kernel(monkeypatch):
    """The layer with the kernel path taken (here the CPU's channels-last kernel)."""
    torch.manual_seed(23)
    rope = RoPE(16).double()
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = rope(x)
        monkeypatch.setattr(fused, 'cuda_kernels_usable', lambda *t: not fused.records_grad(*t))
        scratch = x.clone(memory_format=torch.preserve_format)
        assert rope(scratch, overwrite=True) is scratch
    torch.testing.assert_close(scratch, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('channels_last', [False, True])
def test_group_norm_silu_through_the_kernels(channels_last, monkeypatch):
    """The GPU formulation with its kernels (here their CPU versions: the same row code):
    gradcheck in float64, and float32 against the PyTorch path."""
    monkeypatch.setattr(fused, 'cuda_kernels_usable', lambda *t: not fused.records_grad(*t))
    torch.manual_seed(19)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    norm = _group_norm(6, 3, torch.float64)
    x = (3 * torch.randn(2, 6, 3, 5, dtype=torch.float64) + 2).contiguous(memory_format=layout)
    assert torch.autograd.gradcheck(
        lambda t, w, b: fused.group_norm_silu_by_reductions(t, _with_affine(norm, w, b)),
        (x.requires_grad_(), norm.weight, norm.bias))
    norm32 = _group_norm(16, 4, torch.float32)
    x32 = torch.randn(2, 16, 9, 7).contiguous(memory_format=layout).requires_grad_()
    grad = torch.randn(2, 16, 9, 7)
    results = []
    for kernels in (True, False):
        if not kernels:
            monkeypatch.setattr(fused, 'cuda_kernels_usable', lambda *t: False)
        x32.grad = None
        norm32.zero_grad()
        y = fused.group_norm_silu_by_reductions(x32, norm32)
        y.backward(grad)
        results.append([y.detach(), x32.grad, norm32.weight.grad, norm32.bias.grad])
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kernels', [False, True], ids=['torch ops', 'kernels'])
@pytest.mark.parametrize('channels_last', [False, True])
def test_group_norm_silu_and_shortcut_gradients(kernels, channels_last, monkeypatch):
    """A residual block's first GroupNorm + SiLU with x for the shortcut as its second output
    (the GPU formulation, through the PyTorch ops or the kernels' CPU versions): gradcheck in
    float64 of both outputs, each alone too (the other's gradient None), and x's gradient as
    autograd's sum of the branch's and the shortcut's when x itself is the shortcut."""
    monkeypatch.setattr(fused, 'uses_gpu_formulation', lambda x: True)
    if kernels:
        monkeypatch.setattr(fused, 'cuda_kernels_usable', lambda *t: not fused.records_grad(*t))
    torch.manual_seed(31)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    norm = _group_norm(6, 3, torch.float64)
    x = (3 * torch.randn(2, 6, 3, 5, dtype=torch.float64) + 2).contiguous(memory_format=layout)
    x.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t, w, b: fused.group_norm_silu_and_shortcut(t, _with_affine(norm, w, b)),
        (x, norm.weight, norm.bias))
    grad_y, grad_shortcut = torch.randn(2, *x.shape, dtype=torch.float64)
    y, shortcut = fused.group_norm_silu_and_shortcut(x, norm)
    assert torch.equal(shortcut, x)
    joined = torch.autograd.grad((y, shortcut), x, (grad_y, grad_shortcut))[0]
    summed = torch.autograd.grad((fused.group_norm_silu_by_reductions(x, norm), x), x,
                                 (grad_y, grad_shortcut))[0]
    torch.testing.assert_close(joined, summed, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        assert fused.group_norm_silu_and_shortcut(x, norm)[1] is x


@pytest.mark.parametrize('channels_last', [False, True])
def test_group_norm_silu_kernels_keep_gradients_of_offset_maps(channels_last, monkeypatch):
    """With a mean 100 times the spread, the kernels' backward (its sums centred on the group's
    mean) keeps the weight gradient to 1e-5 in float32 (the sums over g * x of the PyTorch ops,
    as in PyTorch's own GroupNorm, keep about 2e-5)."""
    monkeypatch.setattr(fused, 'cuda_kernels_usable', lambda *t: not fused.records_grad(*t))
    torch.manual_seed(27)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    norm64 = _group_norm(32, 8, torch.float64)
    x64 = (torch.randn(2, 32, 24, 20, dtype=torch.float64) + 100).contiguous(memory_format=layout)
    grad = torch.randn(2, 32, 24, 20, dtype=torch.float64)
    F.silu(norm64(x64.requires_grad_())).backward(grad)
    norm = _group_norm(32, 8, torch.float32)
    norm.load_state_dict(norm64.state_dict())
    x = x64.detach().float().contiguous(memory_format=layout).requires_grad_()
    fused.group_norm_silu_by_reductions(x, norm).backward(grad.float())
    assert relative_error(norm.weight.grad.double(), norm64.weight.grad) < 1e-5
    # these two are bound by the affine step's x * scale + shift (mean-sized terms), either way
    for got, expected in ((x.grad, x64.grad), (norm.bias.grad, norm64.bias.grad)):
        assert relative_error(got.double(), expected) < 5e-5


# -- on CUDA: each primitive against its CPU float64 result ----------------------------------
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


@requires_cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize('channels_last', [False, True])
def test_group_norm_silu_on_cuda(dtype, channels_last):
    """The GPU formulation runs on CUDA (no CPU kernel, no piece loop), in x's dtype/layout."""
    torch.manual_seed(14)
    x64 = 3 * torch.randn(2, 32, 45, 50, dtype=torch.float64) + 2
    norm64 = _group_norm(32, 8, torch.float64)
    expected = F.silu(norm64(x64)).detach()
    x = x64.to(dtype).cuda()
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    norm = _group_norm(32, 8, torch.float32).cuda()
    norm.load_state_dict(norm64.state_dict())
    with torch.no_grad():
        got = fused.group_norm_silu(x, norm)
    assert got.dtype == dtype and got.stride() == x.stride()
    tolerance = 1e-5 if dtype == torch.float32 else REDUCED[dtype]
    assert relative_error(got.cpu(), expected) < tolerance


@requires_cuda
@pytest.mark.parametrize('dtype', ROW_DTYPES)
@pytest.mark.parametrize('shape, channels_last', [((2, 32, 45, 50), False), *SUM_CASES])
def test_channel_row_cuda_kernels_are_their_cpu_versions(dtype, shape, channels_last):
    """The CUDA kernels against the same row code on the CPU (the sums' pieces in the same
    order; exp and contracted multiply-adds may differ in the last bit, and the pieces are added
    by each device's own reduction)."""
    x, grad, coefs, arithmetic, _ = _silu_backward_inputs(shape, channels_last, dtype, 6, 20)
    residual = grad.flip(0)   # another gradient of x's dtype and layout
    ops = torch.ops.anyup_neck
    expected = [torch.empty_like(x)]
    ops._affine_silu_rows(x, coefs[0], coefs[1], expected[0])
    expected += [ops.affine_silu_grad_sums(x, grad, *coefs[:2], coefs[5]),
                 ops.group_norm_silu_input_grad(x, grad, *coefs),
                 ops.group_norm_silu_input_grad(x, grad, *coefs, residual)]
    cx, cgrad, ccoefs = x.cuda(), grad.cuda(), [c.cuda() for c in coefs]
    got = [fused.affine_silu(cx, ccoefs[0], ccoefs[1]),
           ops.affine_silu_grad_sums(cx, cgrad, *ccoefs[:2], ccoefs[5]),
           ops.group_norm_silu_input_grad(cx, cgrad, *ccoefs),
           ops.group_norm_silu_input_grad(cx, cgrad, *ccoefs, residual.cuda())]
    for got_, expected_ in zip(got, expected):
        assert got_.stride() == expected_.stride() and got_.dtype == expected_.dtype
    sums_tolerance = (1e-12 if arithmetic == torch.float64 else 1e-5) * expected[1].abs().max()
    torch.testing.assert_close(got[1].cpu(), expected[1], rtol=0, atol=sums_tolerance.item())
    for got_, expected_ in zip(got[:1] + got[2:], expected[:1] + expected[2:]):
        torch.testing.assert_close(got_.cpu(), expected_, **_row_tolerance(expected_.dtype, 16))
    groups, weight, bias = _groups(shape[1]), torch.randn(shape[1]), torch.randn(shape[1])
    on_cpu = ops.group_norm_coefficients(x, weight, bias, groups, 1e-5)
    on_gpu = ops.group_norm_coefficients(cx, weight.cuda(), bias.cuda(), groups, 1e-5)
    for got_, expected_ in zip(on_gpu, on_cpu):
        torch.testing.assert_close(got_.cpu(), expected_, rtol=1e-5, atol=1e-5)


@requires_cuda
@pytest.mark.parametrize('dtype', ROW_DTYPES)
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('shape', [(2, 128, 45, 50), (1, 8, 5, 3), (3, 4, 1, 13)])
def test_rotary_cuda_kernel_is_its_cpu_version(dtype, channels_last, shape, monkeypatch):
    """rotary_2d_ on CUDA against the same row code on the CPU, and RoPE on CUDA through it."""
    torch.manual_seed(24)
    B, D, H, W = shape
    arithmetic = torch.float64 if dtype == torch.float64 else torch.float32
    tables = [torch.randn(n, D, dtype=arithmetic) for n in (H, H, W, W)]
    x = torch.randn(shape, dtype=torch.float64).to(dtype).contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    for transpose in (False, True):
        expected = x.clone(memory_format=torch.preserve_format)
        torch.ops.anyup_neck._rotary_2d_rows_(expected, *tables, transpose)
        got = x.cuda()
        torch.ops.anyup_neck.rotary_2d_(got, *[t.cuda() for t in tables], transpose)
        torch.testing.assert_close(got.cpu(), expected, **_row_tolerance(dtype, 16))
    monkeypatch.setattr(fused, 'use_cuda_kernels', True)
    rope = RoPE(D).to(arithmetic)
    with torch.no_grad():
        reference = rope.double()(x.double())
        on_gpu = RoPE(D).cuda()
        on_gpu.load_state_dict(rope.state_dict())
        result = on_gpu(x.cuda(), overwrite=True)
    tolerance = 1e-5 if dtype in (torch.float32, torch.float64) else REDUCED[dtype]
    assert relative_error(result.cpu().double(), reference) < tolerance


@requires_cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('channels_last', [False, True])
def test_group_norm_silu_with_cuda_kernels(dtype, channels_last, monkeypatch):
    """GroupNorm+SiLU forward and backward on CUDA through the kernels, against float64."""
    monkeypatch.setattr(fused, 'use_cuda_kernels', True)
    torch.manual_seed(21)
    norm64 = _group_norm(32, 8, torch.float64)
    x64 = (3 * torch.randn(2, 32, 45, 50, dtype=torch.float64) + 2).requires_grad_()
    grad = torch.randn(2, 32, 45, 50, dtype=torch.float64)
    F.silu(norm64(x64)).backward(grad)
    norm = _group_norm(32, 8, torch.float32).cuda()
    norm.load_state_dict(norm64.state_dict())
    x = x64.detach().to(dtype).cuda()
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    x.requires_grad_()
    assert fused.cuda_kernels_usable(x.detach())
    y = fused.group_norm_silu(x, norm)
    y.backward(grad.to(dtype).cuda())
    tolerance = 1e-5 if dtype == torch.float32 else REDUCED[dtype]
    for got, expected in ((y, F.silu(norm64(x64))), (x.grad, x64.grad),
                          (norm.weight.grad, norm64.weight.grad),
                          (norm.bias.grad, norm64.bias.grad)):
        assert relative_error(got.detach().cpu().double(), expected.detach()) < tolerance


@requires_cuda
def test_primitives_on_cuda_match_the_cpu_with_gradients():
    """Forward and autograd of the residual block, projections, rotation and basis softmax on
    CUDA (float32, TF32 off) against float64 on the CPU."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        torch.manual_seed(15)
        from anyup_neck.upsampler import ResBlock
        block64 = ResBlock(16, 16).double()
        x64 = torch.randn(2, 16, 13, 11, dtype=torch.float64, requires_grad=True)
        features64 = F.normalize(torch.randn(2, 6, 5, 7, dtype=torch.float64), dim=1)
        lfu64 = LearnedFeatureUnification(8, 5).double()
        results = {}
        for device, dtype in (('cpu', torch.float64), ('cuda', torch.float32)):
            block = ResBlock(16, 16).to(device, dtype)
            block.load_state_dict(block64.state_dict())
            lfu = LearnedFeatureUnification(8, 5).to(device, dtype)
            lfu.load_state_dict(lfu64.state_dict())
            x = x64.detach().to(device, dtype).contiguous(
                memory_format=torch.channels_last).requires_grad_()
            y = block(x, pool_to=(5, 4)).sum() + block(x).square().mean()
            y = y + lfu(features64.to(device, dtype)).square().sum()
            y.backward()
            results[device] = [y.detach(), x.grad, lfu.basis.grad,
                               *[p.grad for p in block.parameters()]]
        for got, expected in zip(results['cuda'], results['cpu']):
            assert relative_error(got.cpu(), expected) < 1e-4
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
