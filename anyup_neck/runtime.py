"""Process settings for fast CPU runs, defined once.

* glibc's allocator: ``MALLOC_MMAP_MAX_=0`` (large buffers come from the heap, not from fresh
  ``mmap`` pages that the kernel zero-fills on every first touch), ``MALLOC_TRIM_THRESHOLD_``
  and ``MALLOC_TOP_PAD_`` large (freed memory is kept and reused, never handed back). With
  glibc's defaults a training step on the CPU took about twice as long. The price: a process's
  heap never shrinks, and can grow across repeated runs by fragmentation alone.
* ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``: oneDNN stops short of AMX, which some virtual
  machines advertise without allowing (bf16 autocast then dies with SIGILL).

A value the caller has already set in the environment always wins. :func:`apply` sets them for
the running process (``tests/conftest.py``, the benchmark's workers); :func:`environment` gives
the environment for a child process (the tests that start tools).
"""
from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Mapping

#: glibc reads these at process start; mallopt parameter numbers for the running process.
MALLOC_SETTINGS = {'MALLOC_MMAP_MAX_': '0', 'MALLOC_TRIM_THRESHOLD_': '100000000000',
                   'MALLOC_TOP_PAD_': '1000000000'}
_MALLOPT_PARAM = {'MALLOC_MMAP_MAX_': -4, 'MALLOC_TRIM_THRESHOLD_': -1, 'MALLOC_TOP_PAD_': -2}
#: oneDNN reads this when it first dispatches a primitive (not at ``import torch``).
ONEDNN_SETTINGS = {'ONEDNN_MAX_CPU_ISA': 'AVX512_CORE_BF16'}
_INT_MAX = 2 ** 31 - 1


def environment(base: Mapping[str, str] | None = None, malloc: bool = True,
                **extra: str) -> dict[str, str]:
    """``base`` (default: ``os.environ``) plus the settings it lacks, plus ``extra``.

    ``malloc=False`` leaves the allocator settings out (glibc's own behaviour), dropping them
    from ``base`` too.
    """
    env = dict(os.environ if base is None else base)
    if malloc:
        defaults = {**MALLOC_SETTINGS, **ONEDNN_SETTINGS}
    else:
        env = {k: v for k, v in env.items() if k not in MALLOC_SETTINGS}
        defaults = dict(ONEDNN_SETTINGS)
    return {**defaults, **env, **extra}


def apply() -> None:
    """Give the running process the settings it lacks (child processes inherit them).

    The allocator values go to ``os.environ`` and, since glibc read the environment at start,
    to ``mallopt`` now. Its argument is a C int, so the trim threshold becomes 2**31 - 1 bytes
    instead of 1e11: the heap is handed back only when more than 2 GiB at its top are free.
    Call it before the first convolution (oneDNN's first use).
    """
    missing = {k: v for k, v in {**MALLOC_SETTINGS, **ONEDNN_SETTINGS}.items()
               if k not in os.environ}
    os.environ.update(missing)
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
        return
    libc = ctypes.CDLL(None)
    for name, value in missing.items():
        if name in _MALLOPT_PARAM:
            libc.mallopt(_MALLOPT_PARAM[name], min(int(value), _INT_MAX))
