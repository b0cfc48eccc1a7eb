"""anyup_neck.runtime: the process settings for a child's environment and for the running
process (glibc's allocator through mallopt, observed with mallinfo2)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from anyup_neck import runtime

SETTINGS = {**runtime.MALLOC_SETTINGS, **runtime.ONEDNN_SETTINGS}


def test_environment_adds_what_the_caller_did_not_set():
    env = runtime.environment({'PATH': '/bin', 'MALLOC_TOP_PAD_': '7'}, PYTHONPATH='/repo')
    assert env == {**SETTINGS, 'PATH': '/bin', 'MALLOC_TOP_PAD_': '7', 'PYTHONPATH': '/repo'}


def test_environment_without_the_allocator_settings_drops_them():
    env = runtime.environment({'PATH': '/bin', 'MALLOC_TOP_PAD_': '7'}, malloc=False)
    assert env == {**runtime.ONEDNN_SETTINGS, 'PATH': '/bin'}


# Loads runtime.py by path (no torch) and reports whether a 64 MiB malloc is served by mmap
# before and after apply().
PROBE = textwrap.dedent('''
    import ctypes, importlib.util, json, os, sys
    spec = importlib.util.spec_from_file_location('runtime', sys.argv[1])
    runtime = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runtime)

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks', 'uordblks',
            'fordblks', 'keepcost')]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p

    def mmapped_by_malloc():
        before = libc.mallinfo2().hblkhd
        libc.malloc(64 << 20)
        return libc.mallinfo2().hblkhd - before >= 64 << 20

    before = mmapped_by_malloc()
    runtime.apply()
    print(json.dumps({'before': before, 'after': mmapped_by_malloc(),
                      'env': {k: os.environ.get(k) for k in sys.argv[2:]}}))
''')


def _probe(env: dict[str, str]) -> dict:
    result = subprocess.run([sys.executable, '-c', PROBE, runtime.__file__, *SETTINGS],
                            env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


glibc = pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='needs glibc')


@glibc
def test_apply_sets_the_running_process_and_its_environment():
    env = runtime.environment({'PATH': '/usr/bin:/bin'}, malloc=False)
    del env['ONEDNN_MAX_CPU_ISA']
    probe = _probe(env)
    assert probe['before'] and not probe['after']   # large blocks now come from the heap
    assert probe['env'] == SETTINGS


@glibc
def test_apply_keeps_what_the_caller_set():
    probe = _probe({'PATH': '/usr/bin:/bin', 'MALLOC_MMAP_MAX_': '65536',
                    'ONEDNN_MAX_CPU_ISA': 'AVX2'})
    assert probe['before'] and probe['after']      # glibc's mmap limit left as the caller set it
    assert probe['env'] == {**SETTINGS, 'MALLOC_MMAP_MAX_': '65536', 'ONEDNN_MAX_CPU_ISA': 'AVX2'}


def test_the_suite_runs_with_the_settings():
    """tests/conftest.py applies them, so `make test` and a plain `pytest` run alike."""
    assert all(k in os.environ for k in SETTINGS)
