"""CUDA: the sources compile and link here (no GPU needed), the tiled and fused kernels with no
local memory; the kernels run where a GPU is, both versions: 'cuda' (per pixel, the default)
and 'cuda_tiled' (common/window_tiles.h, whose block code tests/ops/test_tiles.py runs on the
CPU)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from anyup_neck.ops import BACKENDS, build_config, window_attention
from anyup_neck.upsampler.official import dense_attention
from tests.numerics import relative_error
from tests.ops.helpers import CASE_IDS, CASES, make_inputs

# Runs in a fresh process that never imports anyup_neck (whose extension registers the same
# ops): build_config is loaded by path, as setup.py does.
CHECK = textwrap.dedent('''
    import importlib.util, sys
    from torch.utils.cpp_extension import load
    spec = importlib.util.spec_from_file_location('build_config', sys.argv[2])
    cfg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cfg)
    load(name='anyup_neck_cuda_check', sources=[str(cfg.CSRC / s) for s in cfg.CUDA_CHECK_SOURCES],
         extra_cflags=cfg.CXX_FLAGS, extra_cuda_cflags=cfg.NVCC_FLAGS + ['--resource-usage'],
         extra_ldflags=cfg.LINK_FLAGS + ['-Wl,--no-undefined'], build_directory=sys.argv[1],
         is_python_module=False, verbose=True)
''')


needs_toolkit = pytest.mark.skipif(
    torch.version.cuda is None or build_config.cuda_home() is None,
    reason='needs a CUDA build of torch and a CUDA toolkit')


@pytest.fixture(scope='module')
def cuda_build(tmp_path_factory) -> tuple[Path, str]:
    """The CUDA sources built by nvcc here (for sm_90 unless TORCH_CUDA_ARCH_LIST says
    otherwise), with ptxas reporting each kernel's resources: the build folder and the log."""
    folder = tmp_path_factory.mktemp('cuda_build')
    env = {**os.environ, 'CUDA_HOME': str(build_config.cuda_home()),
           'TORCH_CUDA_ARCH_LIST': os.environ.get('TORCH_CUDA_ARCH_LIST') or '9.0'}
    run = subprocess.run([sys.executable, '-c', CHECK, str(folder), build_config.__file__],
                         env=env, text=True, capture_output=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return folder, run.stdout + run.stderr


@needs_toolkit
def test_cuda_sources_compile_and_link(cuda_build):
    """nvcc builds the CUDA kernels against the installed torch and every symbol resolves
    (-Wl,--no-undefined), so a broken .cu never lands. Loads the library, runs nothing."""
    folder, _ = cuda_build
    assert list(folder.glob('anyup_neck_cuda_check*.so'))


#: ptxas's report of one kernel (--resource-usage): its mangled name, then its local memory.
KERNEL_RESOURCES = re.compile(
    r'Function properties for (?P<name>\S+)\s+(?P<stack>\d+) bytes stack frame, '
    r'(?P<stores>\d+) bytes spill stores, (?P<loads>\d+) bytes spill loads\s+'
    r'ptxas info\s+: Used (?P<registers>\d+) registers')
#: Mangled template arguments of the kernels' value types (float64, for gradcheck, is exempt).
MANGLED_DTYPES = {'float32': 'IffE', 'float16': 'N3c104HalfEfE', 'bfloat16': 'N3c108BFloat16EfE'}
TILED_KERNELS = ['tiled_forward_kernel', 'tiled_pixel_kernel', 'tiled_reduce_kernel']
FUSED_KERNELS = ['rows_kernel', 'each_kernel']


def kernel_resources(log: str) -> dict[tuple[str, str], list[dict[str, int]]]:
    """ptxas's figures per (kernel, dtype) of TILED_KERNELS + FUSED_KERNELS and MANGLED_DTYPES
    (a fused kernel template has one instantiation per primitive): registers, stack (bytes of
    stack frame), stores and loads (bytes spilled)."""
    found = {}
    for match in KERNEL_RESOURCES.finditer(log):
        name = match['name']
        kernel = next((k for k in TILED_KERNELS + FUSED_KERNELS if k in name), None)
        dtype = next((d for d, mangled in MANGLED_DTYPES.items() if mangled in name), None)
        if kernel and dtype:
            found.setdefault((kernel, dtype), []).append(
                {key: int(match[key]) for key in ('registers', 'stack', 'stores', 'loads')})
    return found


@needs_toolkit
def test_compile_and_link_spills_nothing_to_local_memory(cuda_build):
    """Every tiled window-attention kernel and every fused-primitive kernel keeps its working
    values in registers and shared memory: no stack frame and no register spills (per-thread
    arrays in local memory made the per-pixel kernels slow), in float32, float16 and bfloat16
    (ptxas's report for the build's architecture). Named like the test above, so that
    -k "not compile_and_link" leaves both out on a GPU machine, where they add nothing and take
    nvcc's minute."""
    _, log = cuda_build
    found = kernel_resources(log)
    expected = {(kernel, dtype) for kernel in TILED_KERNELS + FUSED_KERNELS
                for dtype in MANGLED_DTYPES}
    assert set(found) == expected, f'ptxas reported no resources for {expected - set(found)}'
    for (kernel, dtype), reports in found.items():
        for report in reports:
            assert report['stack'] == report['stores'] == report['loads'] == 0, \
                f'{kernel} ({dtype}) uses local memory: {report}'


cuda = pytest.mark.skipif(not torch.cuda.is_available() or 'cuda' not in BACKENDS,
                          reason='needs a GPU and the CUDA kernels')
TOLERANCE = {torch.float64: 1e-11, torch.float32: 2e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}
CUDA_BACKENDS = ['cuda', 'cuda_tiled']


@cuda
@pytest.mark.parametrize('backend', CUDA_BACKENDS)
@pytest.mark.parametrize('dtype', list(TOLERANCE), ids=str)
@pytest.mark.parametrize('case', CASES, ids=CASE_IDS)
def test_cuda_matches_reference(case, dtype, backend):
    B, N, d, C, out_size, in_size, ratio, _ = case
    q, k, v = make_inputs(B, N, d, C, out_size, in_size)
    grad_out = torch.randn(B, C, *out_size, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    expected = dense_attention(*leaves, N, ratio)
    expected.backward(grad_out)
    on_gpu = [t.to('cuda', dtype).requires_grad_() for t in (q, k, v)]
    got = window_attention(*on_gpu, num_heads=N, window_ratio=ratio, backend=backend)
    got.backward(grad_out.to('cuda', dtype))
    tol = TOLERANCE[dtype] * (1 + C ** 0.5 / 8)
    torch.testing.assert_close(got.double().cpu(), expected.detach(), rtol=tol, atol=tol)
    for name, g, e in zip('qkv', on_gpu, leaves):
        torch.testing.assert_close(g.grad.double().cpu(), e.grad, rtol=tol, atol=tol,
                                   msg=lambda m: f'd{name}: {m}')


@cuda
@pytest.mark.parametrize('backend', CUDA_BACKENDS)
def test_cuda_backward_is_deterministic(backend):
    torch.use_deterministic_algorithms(True)
    try:
        q, k, v = (t.cuda().float().requires_grad_() for t in make_inputs(2, 4, 8, 64, (40, 30), (7, 6)))
        grad_out = torch.randn(2, 64, 40, 30, device='cuda')
        grads = []
        for _ in range(2):
            for t in (q, k, v):
                t.grad = None
            window_attention(q, k, v, num_heads=4, window_ratio=0.1,
                             backend=backend).backward(grad_out)
            grads.append([t.grad.clone() for t in (q, k, v)])
        for a, b in zip(*grads):
            assert torch.equal(a, b)
    finally:
        torch.use_deterministic_algorithms(False)


@cuda
@pytest.mark.parametrize('backend', ['auto', *CUDA_BACKENDS])
def test_cuda_autocast_runs_in_the_autocast_dtype(backend):
    """Under CUDA autocast the op runs in bfloat16 (float32 accumulation) and returns v's dtype."""
    q, k, v = (t.cuda().float() for t in make_inputs(2, 4, 8, 6, (9, 11), (4, 5)))
    expected = window_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), num_heads=4,
                                window_ratio=0.1, backend=backend)
    with torch.autocast('cuda', dtype=torch.bfloat16):
        got = window_attention(q, k, v, num_heads=4, window_ratio=0.1, backend=backend)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected.float(), rtol=0, atol=0)


#: Scale-relative bounds between the GPU and its CPU emulation: float64 sums in the same order
#: agree to rounding; in lower precisions exp and the GPU's fused multiply-adds round
#: differently (about one unit in the last place of a half-precision output).
EMULATION_TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3,
                       torch.bfloat16: 1.6e-2}


@cuda
@pytest.mark.parametrize('dtype', list(EMULATION_TOLERANCE), ids=str)
@pytest.mark.parametrize('out_size,in_size,ratio', [
    ((19, 21), (17, 18), 0.3),      # spans of 3 key chunks, bands of one tile row
    ((224, 232), (32, 33), 0.13),   # tiles of one and two key chunks in one call
    ((20, 9), (5, 3), 0.1),         # one band of three tile rows
], ids=['several chunks', 'upsampling scale', 'one band'])
def test_cuda_tiled_is_its_cpu_emulation(out_size, in_size, ratio, dtype):
    """The tiled block code gives on the GPU what its thread-by-thread CPU run gives, in every
    dtype (the emulation runs float16 and bfloat16 with float32 accumulation too; only the
    order of independent blocks differs, which changes no sum)."""
    q, k, v = (t.to(dtype) for t in make_inputs(2, 4, 8, 100, out_size, in_size))
    grad_out = torch.randn(2, 100, *out_size, dtype=torch.float64).to(dtype)
    args = (4, ratio, 8 ** -0.5, 'tiled')
    results = []
    for device in ('cpu', 'cuda'):
        q_, k_, v_, g_ = (t.to(device) for t in (q, k, v, grad_out))
        out, lse = torch.ops.anyup_neck.window_attention_forward(q_, k_, v_, *args)
        grads = torch.ops.anyup_neck.window_attention_backward(g_, q_, k_, v_, lse, *args)
        results.append([t.cpu() for t in (out, lse, *grads)])
    for name, got, expected in zip(('out', 'lse', 'dq', 'dk', 'dv'), results[1], results[0]):
        assert got.dtype == expected.dtype, name
        assert relative_error(got, expected) < EMULATION_TOLERANCE[dtype], name
