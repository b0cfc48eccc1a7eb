"""Finding, on machines without a GPU, the operations that make the host wait for one.

The host queues kernels on a CUDA stream and goes on while the GPU runs them. It waits for
everything queued before (and the GPU then idles while the host queues the next kernels) when
a value crosses between host and device: a tensor made on the host and copied to the GPU
(``torch.tensor(x, device='cuda')``), a value read back (``.item()``, ``bool(t)``, ``.cpu()``)
or an op whose output size depends on the data (``nonzero``, boolean indexing).
:class:`HostWaits` records such ops, as the dispatcher sees them, while a model runs on fake
CUDA tensors (``FakeTensorMode``: shapes and devices, no data) or on the meta device (where a
tensor made from host data is created without a copy, so the makers are watched too). It
counts every copy between host and device, non-blocking ones too (only those from pinned
memory would not wait). It cannot see waits inside an op's own C++ or CUDA code (e.g.
``histc`` finding its range, an explicit ``torch.cuda.synchronize()``); on fake tensors the
extension's ops run their shape functions, not their CUDA launchers.
"""
from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tools'))
from count_traffic import select_gpu_paths_on_meta  # noqa: E402,F401  (for the tests on meta)

aten = torch.ops.aten
#: Ops that read device data on the host.
READS_DATA = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
              aten.unique_consecutive.default, aten._unique2.default, aten.is_nonzero.default}
#: Copies; one between host and device waits. The inputs of other ops may include host
#: scalars, 0-dim CPU tensors, which CUDA kernels take by value; except for these ops, which
#: copy such a value to the device.
COPIES = {aten._to_copy.default, aten.copy_.default, aten.index_put.default,
          aten.index_put_.default, aten._index_put_impl_.default}
#: Tensors made from host data: on a device, a copy.
MAKERS = {torch.tensor, torch.as_tensor, torch.asarray, torch.Tensor.new_tensor}


_TORCH = str(Path(torch.__file__).parent) + os.sep


def _caller() -> str:
    """file:line of the innermost frame outside torch and this module: where the op was asked
    for."""
    frames = [f for f in traceback.extract_stack()
              if not f.filename.startswith(_TORCH) and f.filename != __file__]
    return f'{frames[-1].filename}:{frames[-1].lineno}'




class _Ops(TorchDispatchMode):
    def __init__(self, found: list):
        super().__init__()
        self.found = found

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if func in READS_DATA and any(t.device.type != 'cpu' for t in inputs):
            self.found.append((str(func), _caller()))
        out = func(*args, **kwargs)
        tensors = inputs + [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        host = [t for t in tensors if t.device.type == 'cpu']
        if host and len(host) < len(tensors) and (func in COPIES or any(t.dim() for t in host)):
            self.found.append((str(func), _caller()))
        return out


class _Makers(TorchFunctionMode):
    def __init__(self, found: list):
        super().__init__()
        self.found = found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        data = args[1] if func is torch.Tensor.new_tensor else args[0] if args else None
        from_host = not isinstance(data, torch.Tensor) or data.device.type == 'cpu'
        if func in MAKERS and from_host and out.device.type != 'cpu':
            self.found.append((func.__name__, _caller()))
        return out


class HostWaits:
    """``with HostWaits() as waits:`` records in ``waits.found`` (op, caller) for every op
    that would make the host wait for the device (as far as the module docstring says)."""

    def __init__(self):
        self.found: list[tuple[str, str]] = []
        self._modes = (_Makers(self.found), _Ops(self.found))

    def __enter__(self) -> 'HostWaits':
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
