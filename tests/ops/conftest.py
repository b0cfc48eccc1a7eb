"""Fixtures of the op tests."""
from __future__ import annotations

from typing import Iterator

import pytest
import torch

from anyup_neck.ops import extension


@pytest.fixture(autouse=True)
def _restore_cpu_isa() -> Iterator[None]:
    """Every test ends with the CPU instruction set it started with (use_isa switches it)."""
    if not extension.available():
        yield
        return
    with extension.cpu_isa(torch.ops.anyup_neck._cpu_isa()):
        yield
