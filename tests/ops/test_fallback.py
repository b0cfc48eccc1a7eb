"""Without the compiled extension the package still works (pure PyTorch) and says so once."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r'''
import importlib.abc, json, sys, warnings

class BlockExtension(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == 'anyup_neck.ops._C':
            raise ImportError('not built (blocked by the test)')

sys.meta_path.insert(0, BlockExtension())
import torch
from anyup_neck.ops import BACKENDS, window_attention
from anyup_neck.upsampler.official import dense_attention

q, k, v = torch.randn(1, 8, 9, 7), torch.randn(1, 8, 3, 4), torch.randn(1, 5, 3, 4)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    outs = [window_attention(q, k, v, num_heads=2, window_ratio=0.1) for _ in range(3)]
error = max((o - dense_attention(q, k, v, 2, 0.1)).abs().max().item() for o in outs)
try:
    window_attention(q, k, v, num_heads=2, window_ratio=0.1, backend='cpp')
    explicit = ''
except ValueError as e:
    explicit = str(e)
print(json.dumps({'backends': sorted(BACKENDS), 'warnings': [str(w.message) for w in caught],
                  'error': error, 'explicit': explicit}))
'''


def test_missing_extension_falls_back_to_pytorch_with_one_warning():
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, '-c', SCRIPT], cwd=root, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert 'cpp' not in result['backends'] and 'torch' in result['backends']
    assert result['error'] < 1e-5
    assert len(result['warnings']) == 1, result['warnings']
    assert 'pure-PyTorch backend' in result['warnings'][0]
    assert 'pip install --no-build-isolation -e .' in result['warnings'][0]
    assert "backend: 'cpp' is not available" in result['explicit']
    assert 'not built (blocked by the test)' in result['explicit']
