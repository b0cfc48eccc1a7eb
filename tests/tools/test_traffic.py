"""tools/_traffic.py counts what each operation must read and write: its rules on single
operations; then tools/count_traffic.py and, through it, guards on the GPU path's counted
traffic (meta tensors, no data): RoPE to the pass, the training step's traffic linear in the
batch, less traffic with the fused CUDA kernels."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from _traffic import TrafficCounter, tensor_bytes
import count_traffic
from count_traffic import count, select_gpu_paths_on_meta

from anyup_neck.ops import extension, fused, torch_backend
from anyup_neck.upsampler import RoPE
from tests.mm.helpers import REPO

N = 1000
COMMAND = REPO / 'tools' / 'count_traffic.py'


def _counted(run) -> tuple[float, int]:
    """(float32 tensors of N values moved, operations) of ``run``."""
    with TrafficCounter() as counter:
        run()
    return counter.bytes / (4 * N), counter.ops


a, b = torch.randn(N), torch.randn(N)


@pytest.mark.parametrize('run, passes, ops', [
    (lambda: a + b, 3, 1),                                   # read 2, write 1
    (lambda: a * a, 2, 1),                                   # one tensor read once
    (lambda: torch.add(a, b, out=torch.empty(N)), 3, 1),     # out= is written, not read
    (lambda: a.clone().add_(b), 2 + 3, 2),                   # in place: self read and written
    (lambda: torch.empty(N).copy_(a), 2, 1),                 # copy_ overwrites self
    (lambda: torch.empty(N).zero_(), 1, 1),
    (lambda: a.view(10, 100).t().unsqueeze(0), 0, 0),        # views
    (lambda: torch.ops.aten._unsafe_view(a, [10, 100]), 0, 0),  # an untracked view
    (lambda: torch.empty(N), 0, 0),                          # allocation
    (lambda: a.view(10, 100) * b[:100].expand(10, 100), 2.1, 1),  # a broadcast: its source
    (lambda: torch.ops.aten.silu_backward.grad_input(a, b, grad_input=torch.empty(N)), 3, 1),
], ids=['add', 'square', 'out=', 'in place', 'copy_', 'zero_', 'views', '_unsafe_view', 'empty',
        'expand', 'grad_input='])
def test_each_operation_reads_its_inputs_and_writes_its_outputs_once(run, passes, ops):
    assert _counted(run) == (pytest.approx(passes), ops)


def test_backward_is_counted():
    x = torch.randn(N, requires_grad=True)
    # forward x * b (3), sum (1); backward: the ones gradient (a scalar), then b times it
    # expanded (read b, write x.grad: 2)
    assert _counted(lambda: (x * b).sum().backward())[0] == pytest.approx(3 + 1 + 2, abs=0.01)


@pytest.mark.skipif(not extension.available(), reason='needs the compiled extension')
def test_the_extensions_ops_are_counted_by_their_schema():
    """rotary_2d_ reads and writes its map in place and reads the four tables."""
    image = torch.randn(1, 4, 10, 25).contiguous(memory_format=torch.channels_last)  # N values
    tables = [torch.randn(10, 4), torch.randn(10, 4), torch.randn(25, 4), torch.randn(25, 4)]
    passes, ops = _counted(lambda: torch.ops.anyup_neck.rotary_2d_(image, *tables, False))
    assert ops == 1 and passes == pytest.approx(2 + sum(map(tensor_bytes, tables)) / (4 * N))


@pytest.mark.parametrize('dtype, passes', [(torch.float32, 14), (torch.bfloat16, 18)])
def test_rope_on_a_gpu_moves_14_float32_or_18_bfloat16_passes_at_batch_1(dtype, passes):
    """The GPU formulation (what meta tensors select), in place, one block of rows: the
    block's cos and sin tables (D, H, W), each a multiply (write 1) and an addcmul_ (read and
    write 1): 6; the copy of the first channel half: 1; per half a multiply (read x, cos;
    write: 3 halves) and an addcmul_ (read out, the other half, sin; write: 4 halves): 7.
    In bfloat16 the tables' arithmetic is float32 (two map passes a table pass) and each
    addcmul writes its table in bfloat16 (none converted afterwards): 10 + 1 + 7."""
    with torch.device('meta'), torch.no_grad():
        rope, x = RoPE(128), torch.empty(1, 128, 448, 448, dtype=dtype)
        with TrafficCounter() as counter:
            rope(x, overwrite=True)
    assert counter.bytes / x.nbytes == pytest.approx(passes, abs=0.25)  # + the (n, D) tables


@pytest.mark.parametrize('dtype, bytes_per_value', [(torch.float32, 60), (torch.bfloat16, 50)])
def test_group_norm_silu_backward_on_a_gpu_bytes_per_value(dtype, bytes_per_value):
    """The GPU formulation's backward through PyTorch ops, per value of the map: z and g over
    it (read x and grad, write z, read and write it: float32 for both dtypes), the two sums
    (g; g times x, written then read), then dx in two passes over g, the last writing x's
    dtype (in bfloat16: no float32 dx converted afterwards, 8 bytes a value less)."""
    with torch.device('meta'):
        norm = torch.nn.GroupNorm(8, 128)
        x = torch.empty(1, 128, 96, 96, dtype=dtype, requires_grad=True)
        out = fused.group_norm_silu_by_reductions(x, norm)
        with TrafficCounter() as counter:
            out.backward(torch.empty_like(out))
    assert x.grad.dtype == dtype
    assert counter.bytes / x.numel() == pytest.approx(bytes_per_value, abs=0.1)


@pytest.mark.parametrize('dtype, passes, ops', [(torch.float32, 5, 7),
                                                (torch.bfloat16, 6, 11)])
def test_group_norm_silu_forward_on_a_gpu_passes_and_operations(dtype, passes, ops):
    """The GPU formulation without autograd, with float32 parameters (autocast's case): the
    statistics (float32: var_mean, 1 pass; bfloat16: the mean and the norm, 2), small ops on
    (B, G) and (B, C) tensors (4; 7 in bfloat16), then the map written in x's dtype by one
    addcmul from the float32 coefficients (2 passes) and SiLU in place (2): no coefficients
    converted to x's dtype (2 operations more at each of the model's 20 GroupNorms)."""
    with torch.device('meta'), torch.no_grad():
        norm = torch.nn.GroupNorm(8, 128)
        x = torch.empty(1, 128, 96, 96, dtype=dtype)
        with TrafficCounter() as counter:
            out = fused.group_norm_silu_by_reductions(x, norm)
    assert out.dtype == dtype
    assert counter.bytes / x.nbytes == pytest.approx(passes, abs=0.01)
    assert counter.ops == ops


@pytest.mark.parametrize('cuda_kernels, joined, summed', [(False, 72, 72), (True, 24, 32)],
                         ids=['torch ops', 'kernels'])
def test_shortcut_gradient_joins_the_group_norm_backward(monkeypatch, cuda_kernels, joined,
                                                          summed):
    """A residual block's first GroupNorm + SiLU and its shortcut, backward in float32, bytes
    per value of the map: with x for the shortcut from :func:`group_norm_silu_and_shortcut`,
    the kernels read the shortcut's gradient in dx's pass (their 20 bytes and 4); with x
    itself, autograd sums the two gradients afterwards (12 bytes). The PyTorch ops add it in
    place either way."""
    select_gpu_paths_on_meta(monkeypatch, cuda_kernels=cuda_kernels)
    moved = {}
    with torch.device('meta'):
        norm = torch.nn.GroupNorm(8, 128)
        x = torch.empty(1, 128, 96, 96, requires_grad=True)
        for name, (y, shortcut) in (
                ('joined', fused.group_norm_silu_and_shortcut(x, norm)),
                ('summed', (fused.group_norm_silu_by_reductions(x, norm), x))):
            grads = (torch.empty_like(y), torch.empty_like(x))
            with TrafficCounter() as counter:
                torch.autograd.grad((y, shortcut), x, grads)
            moved[name] = counter.bytes / x.numel()
    assert moved == {'joined': pytest.approx(joined, abs=0.1),
                     'summed': pytest.approx(summed, abs=0.1)}


def test_gpu_training_step_traffic_grows_linearly_with_the_batch(monkeypatch):
    """Per image, a training step at batch 4 moves no more than at batch 1 (the weights'
    gradients are shared). The tiled attention runs in chunks of tile rows here, as at full
    size, and a chunk holds fewer rows at a larger batch: a full-size gradient built per chunk
    made the step's traffic grow with the square of the batch (4.26x from batch 1 to 4 here;
    3.84x now)."""
    select_gpu_paths_on_meta(monkeypatch)
    monkeypatch.setattr(torch_backend, '_CHUNK_ELEMENTS', 2 ** 18)
    one, four = (count('train', 96, 12, 48, batch, qk_dim=32, lfu_basis=8).bytes
                 for batch in (1, 4))
    assert four <= 4 * one


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_fused_cuda_kernels_count_less_traffic_in_fewer_operations(monkeypatch, dtype):
    """Where CUDA runs the extension's fused kernels (no autograd recording) they replace
    several PyTorch operations each, and the tiled kernels the attention's gathers."""
    select_gpu_paths_on_meta(monkeypatch)
    ops_only = count('forward', 64, 8, 24, dtype=dtype, qk_dim=16, lfu_basis=8)
    select_gpu_paths_on_meta(monkeypatch, cuda_kernels=True)
    kernels = count('forward', 64, 8, 24, dtype=dtype, backend='cuda_tiled', qk_dim=16,
                    lfu_basis=8)
    assert kernels.bytes < ops_only.bytes and kernels.ops < ops_only.ops / 2


def test_count_traffic_command_line(capsys):
    """In a process of its own (the command selects the GPU paths for good); a bad argument
    stops it before anything is selected."""
    run = subprocess.run([sys.executable, str(COMMAND), '--size', '64',
                          '--map', '8', '--channels', '24'], capture_output=True, text=True,
                         check=True)
    forward, train = run.stdout.splitlines()
    assert forward.startswith('forward 64<-8 C=24 batch 1 fp32 torch: ')
    assert train.startswith('train 64<-8 C=24 batch 1 fp32 torch: ')
    assert forward.endswith('ms at 4.3 TB/s')
    with pytest.raises(SystemExit) as stop:
        count_traffic.main(['--backend', 'cuda_tiled'])
    assert stop.value.code == 2
    assert '--backend cuda_tiled: expected --cuda-kernels' in capsys.readouterr().err
    assert not fused.uses_gpu_formulation(torch.empty(1))
