"""How the compiled extension ``anyup_neck.ops._C`` is built: sources, flags, CUDA or not.

Shared by ``setup.py`` (which loads this file by path, before the package is importable) and by
the CUDA compile test, so both build exactly the same thing. Imports neither torch nor the
package at module level.

Environment:
    ANYUP_NECK_WITH_CUDA  '1': build the CUDA kernels (fail if no toolkit), '0': never;
                          unset: when a CUDA toolkit is found and either a GPU is visible or
                          TORCH_CUDA_ARCH_LIST names the target architectures.
    CUDA_HOME             toolkit root (default: CUDA_PATH, the nvcc on PATH, /usr/local/cuda).
    TORCH_CUDA_ARCH_LIST  e.g. '9.0' or '8.0;9.0+PTX'; needed when no GPU is visible.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

CSRC = Path(__file__).resolve().parent / 'csrc'
EXTENSION_NAME = 'anyup_neck.ops._C'

#: -fopenmp: at::parallel_for's OpenMP code is inline in ATen's headers; -g0 drops the debug
#: information Python's default flags ask for (a third of the build time).
#: TORCH_ASSERT_ONLY_METHOD_OPERATORS: the sources include ATen/core/Tensor.h and the headers of
#: the few ATen functions they call (ATen/ops/empty.h, ...), never ATen/ATen.h, whose every
#: operator declaration took over a quarter of the C++ build time; the macro makes an
#: include of the whole operator set a compile error.
ASSERT_FLAGS = ['-DTORCH_ASSERT_ONLY_METHOD_OPERATORS']
CXX_FLAGS = ['-O3', '-g0', '-fopenmp', *ASSERT_FLAGS]
LINK_FLAGS = ['-fopenmp']
NVCC_FLAGS = ['-O3', '--expt-relaxed-constexpr', '--expt-extended-lambda', *ASSERT_FLAGS]

#: Sources of the CUDA compile-and-link check: the schema/helpers and the CUDA kernels, which
#: together must resolve every symbol against torch and the CUDA runtime.
CUDA_CHECK_SOURCES = ['common/fused_ops.cpp', 'common/window_attention.cpp',
                      'cuda/fused_cuda.cu', 'cuda/window_attention_cuda.cu']


def sources(with_cuda: bool) -> list[str]:
    """All C++ sources, plus the CUDA ones when ``with_cuda``, as POSIX paths relative to
    ``CSRC`` (``module.cpp``, ``common/...``, ``cpu/...``, ``cuda/...``)."""
    suffixes = ('.cpp', '.cu') if with_cuda else ('.cpp',)
    return sorted(p.relative_to(CSRC).as_posix() for p in CSRC.rglob('*') if p.suffix in suffixes)


def cuda_home() -> Path | None:
    """Root of a usable CUDA toolkit (bin/nvcc and include/cuda_runtime.h), or None."""
    candidates = [os.environ.get('CUDA_HOME'), os.environ.get('CUDA_PATH')]
    nvcc = shutil.which('nvcc')
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    candidates.append('/usr/local/cuda')
    for root in filter(None, candidates):
        path = Path(root)
        if (path / 'bin' / 'nvcc').exists() and (path / 'include' / 'cuda_runtime.h').exists():
            return path
    return None


def want_cuda(gpu_visible: bool, torch_has_cuda: bool) -> tuple[bool, str]:
    """Whether to compile the CUDA kernels, and why (for the build log)."""
    setting = os.environ.get('ANYUP_NECK_WITH_CUDA', '').strip()
    if setting == '0':
        return False, 'ANYUP_NECK_WITH_CUDA=0'
    home = cuda_home()
    problems = []
    if not torch_has_cuda:
        problems.append('torch is a CPU-only build')
    if home is None:
        problems.append('no CUDA toolkit found (set CUDA_HOME to its root)')
    if not gpu_visible and not os.environ.get('TORCH_CUDA_ARCH_LIST'):
        problems.append('no GPU visible and TORCH_CUDA_ARCH_LIST unset (e.g. "9.0")')
    if setting == '1' and problems:
        raise RuntimeError('ANYUP_NECK_WITH_CUDA=1 but ' + '; '.join(problems))
    if problems:
        return False, '; '.join(problems)
    return True, f'CUDA toolkit at {home}'
