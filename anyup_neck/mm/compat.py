"""Make the pinned OpenMMLab stack usable as it installs today (first import of ``anyup_neck.mm``).

Two fixes, each applied once, each as narrow as possible:

1. **mmcv-lite has no ``mmcv._ext``** (the compiled ops), yet ``mmseg`` imports ``mmcv.ops``
   unguarded, and every ``mmcv.ops`` file resolves its kernels with
   ``ext_loader.load_ext('_ext', [names])`` at import time. When (and only when) the real
   extension is absent, :func:`install_mmcv_ext_stand_in` registers a module
   ``mmcv._ext`` whose every attribute is a function raising :class:`MissingMmcvOpError`
   with instructions. Nothing in this package calls those ops; if some config does (e.g. a
   head using ``mmcv.ops.point_sample``), it fails loudly at the call, never silently.
   The stand-in carries a ``__spec__`` with no loader: ``mmengine``'s
   ``mmcv_full_available()`` (``pkgutil.find_loader('mmcv._ext')``) then reads it and
   correctly answers ``False``, so mmengine keeps skipping its mmcv-full-only code paths.

2. **torch >= 2.6 loads checkpoints with ``weights_only=True``** by default, and mmengine's
   ``Runner`` calls ``torch.load`` without the argument. Its checkpoints hold, beside
   tensors, the ``MessageHub`` state: :class:`mmengine.logging.HistoryBuffer` objects whose
   histories are numpy arrays, and numpy scalars. :func:`allow_runner_checkpoint_types`
   adds exactly those types to torch's safe globals (``torch.serialization.add_safe_globals``)
   instead of disabling the safe loader, so resume, ``tools/test.py`` and inference load the
   Runner's own files while arbitrary pickled code is still refused.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import pickle
import sys
import types

import numpy as np
import torch

MMCV_EXT = 'mmcv._ext'


class MissingMmcvOpError(RuntimeError):
    """A compiled mmcv op was called, but only mmcv-lite (no compiled ops) is installed."""


def _missing_op(name: str):
    def op(*args, **kwargs):
        raise MissingMmcvOpError(
            f'mmcv op {name!r} was called, but the installed mmcv has no compiled ops '
            f'(mmcv-lite; {MMCV_EXT} is a stand-in installed by anyup_neck.mm.compat). '
            f'Install the full mmcv build for your torch/CUDA '
            f'(https://mmcv.readthedocs.io/en/latest/get_started/installation.html), '
            f'or choose model components that do not use mmcv.ops.')
    op.__name__ = op.__qualname__ = name
    return op


def _stand_in_module() -> types.ModuleType:
    module = types.ModuleType(MMCV_EXT, 'Stand-in for the compiled mmcv ops (absent in mmcv-lite); '
                                        'every op raises MissingMmcvOpError.')
    # No loader: importlib.util.find_spec / pkgutil.find_loader report "not a real extension".
    module.__spec__ = importlib.machinery.ModuleSpec(MMCV_EXT, None, origin='anyup_neck stand-in')
    module.__getattr__ = _stand_in_getattr
    return module


def _stand_in_getattr(name: str):
    """Module-level ``__getattr__`` (PEP 562): any op name resolves to a raising function."""
    if name.startswith('__'):
        raise AttributeError(f'module {MMCV_EXT!r} has no attribute {name!r}')
    return _missing_op(name)


def install_mmcv_ext_stand_in() -> bool:
    """Register the ``mmcv._ext`` stand-in if mmcv is installed without it.

    Returns True when the stand-in is (now) in place, False when the real extension exists
    or mmcv is not installed.
    """
    existing = sys.modules.get(MMCV_EXT)
    if existing is not None:
        return existing.__spec__ is not None and existing.__spec__.loader is None
    if importlib.util.find_spec('mmcv') is None or importlib.util.find_spec(MMCV_EXT) is not None:
        return False
    import mmcv
    module = _stand_in_module()
    sys.modules[MMCV_EXT] = module
    mmcv._ext = module
    return True


def runner_checkpoint_types() -> list:
    """The non-tensor types an mmengine Runner checkpoint pickles (MessageHub state)."""
    from mmengine.logging import HistoryBuffer
    numpy_dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64,
                                                np.int32, np.int16, np.int8, np.uint8, np.bool_)]
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    return [HistoryBuffer, np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar,
            *numpy_dtypes]


HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


def history_buffer_method(owner: type, name: str):
    """``getattr`` restricted to ``HistoryBuffer``'s statistics methods.

    Stands in for ``builtins.getattr`` in the safe unpickler, which otherwise would allow any
    attribute of any allowed object (a way out of the sandbox).
    """
    from mmengine.logging import HistoryBuffer
    if owner is not HistoryBuffer or name not in HISTORY_BUFFER_METHODS:
        raise pickle.UnpicklingError(
            f'weights_only load: getattr({owner!r}, {name!r}) is not allowed; only '
            f'HistoryBuffer.{{{", ".join(HISTORY_BUFFER_METHODS)}}} are (anyup_neck.mm.compat)')
    return getattr(HistoryBuffer, name)


def allow_runner_checkpoint_types() -> None:
    """Allow-list :func:`runner_checkpoint_types` for ``torch.load(weights_only=True)``."""
    torch.serialization.add_safe_globals(
        [*runner_checkpoint_types(), (history_buffer_method, 'builtins.getattr')])


install_mmcv_ext_stand_in()
allow_runner_checkpoint_types()
