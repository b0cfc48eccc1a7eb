"""tools/gpu_session.sh, the measurements of a short session on a lent GPU: each benchmark it
runs parses and asks for the cases it is meant to (a bad flag must show here, on the CPU, not
in the GPU session), and the steps' time limits fit the session."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'tools'))
import benchmark  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[2] / 'tools' / 'gpu_session.sh'


def _steps() -> dict[str, tuple[int, list[str]]]:
    """step name -> (time limit in s, its command's words after the interpreter), with the
    script's variables expanded."""
    text = SCRIPT.read_text().replace('\\\n', ' ')
    bench = re.search(r'^BENCH=\((.*)\)$', text, re.M).group(1)        # "$PYTHON" tools/...
    text = text.replace('"${BENCH[@]}"', bench)
    steps = {}
    for name, seconds, command in re.findall(r'^step (\S+) (\d+) (.*)$', text, re.M):
        words = shlex.split(command.replace('$OUT', '/tmp/out'))
        assert words[0] == '$PYTHON', command
        steps[name] = int(seconds), words[1:]
    return steps


def _benchmark_args(words: list[str]):
    """benchmark.py's arguments from a step's words (``tools/benchmark.py ...``)."""
    return benchmark.parse_args(words[1:])


def test_benchmarks_parse_and_cover_the_gpu_targets():
    steps = _steps()
    cases = {name: benchmark.cases(_benchmark_args(words))
             for name, (_, words) in steps.items() if words[0] == 'tools/benchmark.py'}
    assert set(cases) == {'op', 'forward', 'forward-b4', 'train', 'large', 'downstream',
                          'profile'}
    labels = {(c.mode, c.label, c.size, c.batch) for group in cases.values() for c in group}
    for target in [('op', 'cuda_tiled', 448, 1), ('op-train', 'cuda_tiled', 448, 4),
                   ('op-train', 'cuda_tiled+bf16', 448, 1), ('forward', 'official', 448, 1),
                   ('forward', 'torch+bf16+fused', 448, 1), ('forward', 'cuda_tiled', 448, 4),
                   ('train', 'cuda_tiled', 448, 4), ('forward', 'torch', 2048, 1),
                   ('downstream', 'anyup', 448, 8)]:
        assert target in labels, target
    # each case is a process: start-up and warm-up included, a few seconds each
    assert sum(len(group) for group in cases.values()) <= 50
    assert _benchmark_args(steps['profile'][1]).profile > 0
    # the whole model's steps count their traffic: the bandwidth they reach
    assert all(_benchmark_args(steps[name][1]).traffic for name in ('forward', 'forward-b4',
                                                                     'train'))


def test_steps_fit_the_session():
    """The script is valid bash; the device kit gives the extra command 450 s; the tests step
    runs first."""
    subprocess.run(['bash', '-n', str(SCRIPT)], check=True)
    steps = _steps()
    assert list(steps)[0] == 'cuda-tests'
    assert sum(seconds for seconds, _ in steps.values()) <= 450


def test_script_runs_each_step(tmp_path):
    """With an interpreter that only echoes, every step runs and reports."""
    run = subprocess.run(['bash', str(SCRIPT)], cwd=SCRIPT.parents[1], capture_output=True,
                         text=True, env={'PATH': '/usr/bin:/bin', 'PYTHON': 'echo',
                                         'OUT': str(tmp_path)}, check=True)
    assert re.findall(r'^== (\S+): exit 0', run.stdout, re.M) == list(_steps())
    assert '--cuda-fused-kernels' in (tmp_path / 'forward.txt').read_text()
