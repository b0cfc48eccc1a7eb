"""Installs anyup_neck with its compiled window-attention op (anyup_neck/ops/csrc).

The op is compiled against the torch of the environment it is installed into, so torch must be
importable when this file runs: install torch first, then

    pip install --no-build-isolation .        (or -e . for a development checkout)

pip's default build isolation hides the installed torch from the build; the install then
stops with that instruction instead of producing a package without its kernels. C++ is always
compiled, CUDA when a toolkit is found; switches in anyup_neck/ops/build_config.py.
"""
import importlib.util
import os
from pathlib import Path

from setuptools import find_packages, setup


def _build_config():
    """anyup_neck/ops/build_config.py, loaded by path (the package is not importable yet)."""
    path = Path(__file__).resolve().parent / 'anyup_neck' / 'ops' / 'build_config.py'
    spec = importlib.util.spec_from_file_location('anyup_neck_build_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NO_TORCH_MESSAGE = (
    'anyup_neck: torch is not importable here, so the window-attention op cannot be compiled.\n'
    'The op is built against the installed torch. Install torch first, then install this '
    'package without build isolation (which hides the installed torch from the build):\n'
    '    pip install --no-build-isolation .      (or: pip install --no-build-isolation -e .)\n'
    '    pip wheel --no-build-isolation .        (to build a wheel)')


def _extensions() -> dict:
    """``ext_modules`` and ``cmdclass`` for the compiled op (stops with NO_TORCH_MESSAGE when
    torch is not importable)."""
    try:
        import torch
    except ImportError:
        raise SystemExit(NO_TORCH_MESSAGE) from None
    config = _build_config()
    with_cuda, reason = config.want_cuda(torch.cuda.is_available(), torch.version.cuda is not None)
    if with_cuda:  # before cpp_extension reads it at import
        os.environ.setdefault('CUDA_HOME', str(config.cuda_home()))
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    print(f'anyup_neck: building the window-attention op for CPU{" and CUDA" * with_cuda} '
          f'({reason})')
    sources = [f'anyup_neck/ops/csrc/{name}' for name in config.sources(with_cuda)]
    if with_cuda:
        extension = CUDAExtension(config.EXTENSION_NAME, sources,
                                  extra_compile_args={'cxx': config.CXX_FLAGS,
                                                      'nvcc': config.NVCC_FLAGS},
                                  extra_link_args=config.LINK_FLAGS)
    else:
        extension = CppExtension(config.EXTENSION_NAME, sources,
                                 extra_compile_args=config.CXX_FLAGS,
                                 extra_link_args=config.LINK_FLAGS)
    return {'ext_modules': [extension], 'cmdclass': {'build_ext': BuildExtension}}


setup(
    name='anyup_neck',
    version='0.1.0',
    description='AnyUp feature upsampling as an OpenMMLab neck, with its own window-attention op',
    packages=find_packages(include=['anyup_neck', 'anyup_neck.*']),
    python_requires='>=3.10',
    install_requires=['torch>=2.4', 'numpy', 'pillow', 'tqdm'],
    extras_require={
        'mm': ['mmengine>=0.10', 'mmsegmentation>=1.2', 'mmcv-lite>=2.0', 'timm>=1.0',
               'torchvision', 'ftfy', 'regex'],
        'test': ['pytest'],
    },
    **_extensions(),
)
