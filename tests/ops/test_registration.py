"""torch.library registration: schema, fake kernels, autograd formula, torch.compile."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch import nn

from anyup_neck.ops import extension, window_attention
from tests.ops.helpers import make_inputs

pytestmark = pytest.mark.skipif(not extension.available(), reason='needs the compiled extension')

FORWARD = torch.ops.anyup_neck.window_attention_forward.default if extension.available() else None
BACKWARD = torch.ops.anyup_neck.window_attention_backward.default if extension.available() else None


@pytest.mark.parametrize('channels_last', [False, True])
def test_opcheck(channels_last):
    q, k, v = make_inputs(2, 2, 4, 3, (5, 7), (3, 4))
    if channels_last:
        q = q.contiguous(memory_format=torch.channels_last)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    torch.library.opcheck(FORWARD, (q, k, v, 2, 0.1, 0.5))
    out, lse = FORWARD(q, k, v, 2, 0.1, 0.5)
    grad = torch.randn_like(out)
    torch.library.opcheck(BACKWARD, (grad, q.detach(), k.detach(), v.detach(), lse, 2, 0.1, 0.5))


@pytest.mark.parametrize('channels_last', [False, True])
def test_opcheck_fused_ops_with_cuda_kernels(channels_last):
    """Schema (mutations included), fake kernels (dtype, strides) and the real CPU kernels
    agree."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 4, 3, 5, dtype=torch.bfloat16).contiguous(memory_format=layout)
    grad = torch.randn_like(x)
    coefs = [torch.randn(2, 4) for _ in range(6)]
    ops = torch.ops.anyup_neck
    torch.library.opcheck(ops.group_norm_coefficients.default, (x, *coefs[0], 2, 1e-5))
    torch.library.opcheck(ops.affine_silu_grad_sums.default, (x, grad, *coefs[:3]))
    torch.library.opcheck(ops.group_norm_silu_input_grad.default, (x, grad, *coefs))
    x32 = x.float()
    torch.library.opcheck(ops.affine_silu.default, (x32, *coefs[:2], torch.empty_like(x32)))
    if channels_last:   # the CPU kernel's layout
        tables = [torch.randn(n, 4) for n in (3, 3, 5, 5)]
        torch.library.opcheck(ops.rotary_2d_.default, (x32.clone(), *tables))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_fake_kernels_match_real_outputs(dtype):
    q, k, v = make_inputs(2, 4, 8, 5, (9, 11), (4, 3), dtype=dtype)
    real = FORWARD(q, k, v, 4, 0.1, 0.3)
    real_grads = BACKWARD(torch.ones_like(real[0]), q, k, v, real[1], 4, 0.1, 0.3)
    with FakeTensorMode() as mode:
        fq, fk, fv = (mode.from_tensor(t) for t in (q, k, v))
        fake = FORWARD(fq, fk, fv, 4, 0.1, 0.3)
        fake_grads = BACKWARD(torch.ones_like(fake[0]), fq, fk, fv, fake[1], 4, 0.1, 0.3)
    for r, f in zip((*real, *real_grads), (*fake, *fake_grads)):
        assert (f.shape, f.dtype, f.stride()) == (r.shape, r.dtype, r.stride())
    assert fake[0].shape == (2, 5, 9, 11) and fake[1].shape == (2, 4, 9, 11)
    assert fake[1].dtype == (torch.float64 if dtype == torch.float64 else torch.float32)


def test_meta_tensors():
    q, k, v = (t.to('meta') for t in make_inputs(1, 2, 4, 6, (8, 5), (2, 2), dtype=torch.float32))
    out = window_attention(q, k, v, num_heads=2, window_ratio=0.1, backend='cpp')
    assert out.device.type == 'meta' and out.shape == (1, 6, 8, 5)


class _Upsampler(nn.Module):
    """A module that uses the op: 1x1 convs make queries and keys, features are the values."""

    def __init__(self) -> None:
        super().__init__()
        self.to_q = nn.Conv2d(3, 16, 1)
        self.to_k = nn.Conv2d(6, 16, 1)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return window_attention(self.to_q(image), self.to_k(features), features, num_heads=4,
                                window_ratio=0.1, backend='cpp')


def test_torch_compile_fullgraph_forward_and_backward():
    torch.manual_seed(0)
    model = _Upsampler()
    image, features = torch.randn(2, 3, 20, 24), torch.randn(2, 6, 5, 6, requires_grad=True)
    expected = model(image, features)
    expected.square().sum().backward()
    grads = [p.grad.clone() for p in (*model.parameters(), features)]
    for p in (*model.parameters(), features):
        p.grad = None
    compiled = torch.compile(model, fullgraph=True, backend='inductor')
    got = compiled(image, features)
    got.square().sum().backward()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for g, p in zip(grads, (*model.parameters(), features)):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-5)


def test_cpu_isa_switches_for_a_block_and_checks_its_name():
    before = torch.ops.anyup_neck._cpu_isa()
    with extension.cpu_isa('base'):
        assert torch.ops.anyup_neck._cpu_isa() == 'base'
    assert torch.ops.anyup_neck._cpu_isa() == before
    with pytest.raises(RuntimeError, match="_set_cpu_isa: isa: expected base, avx2, avx512 or "
                                           "auto, got 'sse'"):
        with extension.cpu_isa('sse'):
            pass
    assert torch.ops.anyup_neck._cpu_isa() == before


@pytest.mark.parametrize('setting,expected', [('base', 'base'), ('sse', "ANYUP_NECK_CPU_ISA: "
                                              "expected base, avx2, avx512 or auto, got 'sse'")])
def test_cpu_isa_environment_variable_is_read_once(setting, expected):
    """ANYUP_NECK_CPU_ISA picks the instruction set when the CPU kernels first run; changing
    the variable afterwards changes nothing."""
    script = ('import os, torch, anyup_neck.ops\n'
              'try:\n'
              '    first = torch.ops.anyup_neck._cpu_isa()\n'
              'except RuntimeError as error:\n'
              '    print(str(error).splitlines()[0]); raise SystemExit\n'
              'os.environ["ANYUP_NECK_CPU_ISA"] = "avx2"\n'
              'print(first, torch.ops.anyup_neck._cpu_isa())\n')
    run = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                         env={**os.environ, 'ANYUP_NECK_CPU_ISA': setting}, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == (f'{expected} {expected}' if setting == 'base' else expected)


def test_head_limit_comes_from_the_kernels():
    assert extension.MAX_HEADS == torch.ops.anyup_neck._max_heads() == 64


@pytest.mark.parametrize('kernels', extension.KERNELS)
def test_every_kernels_choice_runs_on_cpu_with_the_same_results(kernels):
    q, k, v = make_inputs(2, 2, 4, 3, (9, 10), (4, 5))
    out, lse = FORWARD(q, k, v, 2, 0.2, 0.5, kernels)
    grads = BACKWARD(torch.ones_like(out), q, k, v, lse, 2, 0.2, 0.5, kernels)
    ref_out, ref_lse = FORWARD(q, k, v, 2, 0.2, 0.5)
    ref_grads = BACKWARD(torch.ones_like(out), q, k, v, ref_lse, 2, 0.2, 0.5)
    for got, expected in zip((out, lse, *grads), (ref_out, ref_lse, *ref_grads)):
        torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-11)
