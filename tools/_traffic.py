"""Memory traffic of a run, counted at the dispatcher: the bytes each operation reads and
writes, and the number of operations (on a GPU, about one kernel launch each).

:class:`TrafficCounter` sees every operation PyTorch dispatches while it is active, autograd's
backward and the extension's ops included, and counts what each one must move at least:

* every distinct input tensor is read once and every output written once, each as the
  distinct elements it spans (a broadcast ``expand`` view counts its source, not its size);
* an argument the operation writes (``out=``, ``grad_input=``) is written, not read; the
  ``self`` of an in-place operation is read and written, except where the operation only
  overwrites it (``copy_``, ``fill_``, ``zero_``, the random fills);
* views, reshapes of views and allocations move nothing and are not counted.

What a kernel moves beyond that (re-reads from a cache too small, cuDNN's workspaces, a
tile's halo) is not seen, so the count is the traffic of the run's operations as written:
its time at a card's memory bandwidth is the floor for those operations, and a measured time
divided into it gives the bandwidth they reach.
"""
from __future__ import annotations

import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

aten, prim = torch.ops.aten, torch.ops.prim
#: Operations that move no data, beyond the view operations (``OpOverload.is_view``): the
#: allocations, and the views that autograd does not track as views (``_unsafe_view``, which
#: ``reshape`` and ``matmul`` produce; the ``unsafe_`` splits).
NO_TRAFFIC = {aten.empty, aten.empty_like, aten.empty_strided, aten.new_empty,
              aten.new_empty_strided, aten.detach, aten.lift_fresh, aten.set_, aten.resize_,
              aten.as_strided_, aten._unsafe_view, aten.unsafe_split,
              aten.unsafe_split_with_sizes, aten.unsafe_chunk, prim.device, prim.layout}
#: In-place operations that overwrite ``self`` without reading it.
OVERWRITE_SELF = {aten.copy_, aten.fill_, aten.zero_, aten.normal_, aten.uniform_,
                  aten.bernoulli_, aten.random_, aten.exponential_}


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements ``t`` spans: a dimension of stride 0 (a broadcast)
    repeats its elements and does not count."""
    sizes = [size for size, stride in zip(t.shape, t.stride()) if stride != 0]
    return (math.prod(sizes) if t.numel() else 0) * t.element_size()


def _tensors(value) -> list[torch.Tensor]:
    return [t for t in tree_leaves(value) if isinstance(t, torch.Tensor)]


def _unique(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """``tensors`` without repeats of one tensor object (``x * x`` reads x once)."""
    seen, unique = set(), []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            unique.append(t)
    return unique


class TrafficCounter(TorchDispatchMode):
    """Counts, while active, the bytes the dispatched operations read and write (see the
    module's rules) and the operations that move data.

    Attributes: ``bytes`` (read + written), ``ops``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.is_view or func.overloadpacket in NO_TRAFFIC:
            return out
        reads, writes = [], []
        for i, argument in enumerate(func._schema.arguments):
            value = args[i] if i < len(args) else kwargs.get(argument.name)
            tensors = _tensors(value)
            mutated = argument.alias_info is not None and argument.alias_info.is_write
            if mutated:
                writes += tensors
            if not mutated or not (argument.kwarg_only
                                   or func.overloadpacket in OVERWRITE_SELF):
                reads += tensors
        writes += [t for t in _tensors(out) if not any(t is w for w in writes)]
        self.bytes += sum(map(tensor_bytes, _unique(reads) + _unique(writes)))
        self.ops += 1
        return out
