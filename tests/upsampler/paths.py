"""Selecting which implementation the fused primitives take, so that tests cover each."""
from __future__ import annotations

import pytest

from anyup_neck.ops import fused

#: 'cpu': the compiled CPU kernels where usable (the default); 'pytorch': without them;
#: 'gpu': without them and with every primitive on its GPU formulation (as on CUDA).
PATHS = ('cpu', 'pytorch', 'gpu')


def use_paths(monkeypatch: pytest.MonkeyPatch, paths: str) -> None:
    """Make the fused primitives take ``paths`` (one of :data:`PATHS`) for this test."""
    if paths not in PATHS:
        raise ValueError(f'paths: expected one of {PATHS}, got {paths!r}')
    if paths != 'cpu':
        monkeypatch.setattr(fused, 'cpu_kernels_usable', lambda *tensors: False)
    if paths == 'gpu':
        monkeypatch.setattr(fused, 'uses_gpu_formulation', lambda x: True)
